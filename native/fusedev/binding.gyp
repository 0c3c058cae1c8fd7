{
  "targets": [
    {
      "target_name": "fusedev",
      "sources": ["fusedev.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wextra"]
    }
  ]
}
