/*
 * native/fusedev: the one thing the /dev/fuse transport cannot do in
 * JavaScript without tying up a libuv pool thread per outstanding read:
 * read requests when the device is readable.
 *
 *   start(fd, bufSize, cb) -> handle
 *       Sets O_NONBLOCK on fd and watches it with uv_poll on the main
 *       loop.  When readable, reads up to BATCH requests with read(2)
 *       into one buffer of bufSize bytes (the kernel hands one whole
 *       request per read) and calls cb(buffer) with a fresh Buffer copy of
 *       each, through napi_make_callback so promise jobs run in between.
 *       EAGAIN ends a batch; EINTR and ENOENT (a request interrupted
 *       before we read it) are retried; any other error, ENODEV after the
 *       unmount included, stops the watch and calls cb(null, errno) once.
 *   stop(handle)
 *       Stops the watch (idempotent).  The caller closes fd after.
 *
 * Everything runs on the main thread: no locks.  Writes (replies,
 * notifications) stay in JavaScript (src/fuse/dev.ts).  If this addon is
 * not built, dev.ts reads from a worker thread instead.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#define BATCH 64

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
  napi_async_context actx;
  int fd;
  size_t size;
  char *buf;
  int stopped;
  int closing;
} reader_t;

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)

static void on_close(uv_handle_t *h) {
  reader_t *r = h->data;
  free(r->buf);
  free(r);
}

static void finish(reader_t *r) {
  if (r->closing) return;
  r->closing = 1;
  napi_delete_reference(r->env, r->cb);
  napi_async_destroy(r->env, r->actx);
  uv_close((uv_handle_t *)&r->poll, on_close);
}

static void deliver(reader_t *r, const char *data, size_t n, int err) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2];
  napi_get_reference_value(env, r->cb, &cb);
  napi_get_global(env, &recv);
  if (data != NULL) {
    void *copy;
    napi_create_buffer_copy(env, n, data, &copy, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_int32(env, err, &argv[1]);
  }
  napi_value result;
  if (napi_make_callback(env, r->actx, recv, cb, 2, argv, &result) == napi_pending_exception) {
    napi_value ex;
    napi_get_and_clear_last_exception(env, &ex);
    napi_fatal_exception(env, ex);
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  reader_t *r = p->data;
  if (r->stopped) return;
  /* libuv reports poll's EPOLLERR (the connection ended: unmounted or
     aborted) as UV_EBADF; the read below says what really happened
     (ENODEV). */
  for (int i = 0; i < BATCH && !r->stopped; i++) {
    ssize_t n = read(r->fd, r->buf, r->size);
    if (n < 0) {
      if (errno == EINTR || errno == ENOENT) continue;
      if (errno == EAGAIN && status < 0) errno = -status;
      else if (errno == EAGAIN) break;
      int e = errno;
      r->stopped = 1;
      uv_poll_stop(&r->poll);
      deliver(r, NULL, 0, e);
      break;
    }
    deliver(r, r->buf, (size_t)n, 0);
  }
}

static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "start(fd, bufSize, cb)");
    return NULL;
  }
  int32_t fd;
  uint32_t size;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_uint32(env, argv[1], &size));
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  reader_t *r = calloc(1, sizeof(*r));
  if (r == NULL || (r->buf = malloc(size)) == NULL) {
    free(r);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->env = env;
  r->fd = fd;
  r->size = size;
  r->poll.data = r;
  napi_value name;
  CHECK(napi_create_string_utf8(env, "fusedev", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &r->actx));
  CHECK(napi_create_reference(env, argv[2], 1, &r->cb));
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc == 0) rc = uv_poll_start(&r->poll, UV_READABLE, on_poll);
  if (rc != 0) {
    napi_throw_error(env, NULL, uv_strerror(rc));
    return NULL;
  }
  napi_value ext;
  CHECK(napi_create_external(env, r, NULL, NULL, &ext));
  return ext;
}

static napi_value stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  reader_t *r;
  CHECK(napi_get_value_external(env, argv[0], (void **)&r));
  if (!r->stopped) {
    r->stopped = 1;
    uv_poll_stop(&r->poll);
  }
  finish(r);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, stop, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
