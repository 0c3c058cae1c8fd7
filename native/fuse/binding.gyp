{
  "targets": [
    {
      "target_name": "fuse",
      "sources": ["fuse-native.c"],
      "include_dirs": [
        "<!(node -p \"require('path').dirname(require.resolve('napi-macros', {paths: [require('path').dirname(require.resolve('fuse-native'))]}))\")",
        "<!(node -p \"require('path').join(require('path').dirname(require.resolve('fuse-shared-library-linux/package.json')), 'libfuse', 'include')\")"
      ],
      "libraries": ["-l:libfuse.so.2", "-lpthread"],
      "defines": ["_FILE_OFFSET_BITS=64"],
      "cflags": ["-g", "-O3", "-Wall"]
    }
  ]
}
