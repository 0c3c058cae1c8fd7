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
 *   noCaps(handle, nodeid, known)
 *       Remember (known true) or forget that inode `nodeid` has no
 *       security.capability xattr.  A GETXATTR of that name for a
 *       remembered inode is answered ENODATA right here, without waking
 *       JavaScript: the kernel asks it before every write(2)
 *       (src/fuse/ops.ts explains), and one round trip through the event
 *       loop per write is what would bound small writes.
 *       ops.ts keeps this set equal to its own.
 *   fastCount(handle) -> number of requests answered that way.
 *
 * Everything runs on the main thread: no locks.  Writes (replies,
 * notifications) stay in JavaScript (src/fuse/dev.ts).  If this addon is
 * not built, dev.ts reads from a worker thread instead.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#define BATCH 64

/* An open-addressing set of u64 node ids (0 is the empty slot; nodeid 0
   is never a real inode), with tombstones, grown at half full. */
typedef struct {
  uint64_t *slots;
  size_t cap, used, live;
} idset_t;

#define TOMB UINT64_MAX

static size_t idhash(uint64_t x, size_t cap) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  return (size_t)x & (cap - 1);
}

static int idset_has(const idset_t *s, uint64_t id) {
  if (s->cap == 0) return 0;
  for (size_t i = idhash(id, s->cap), n = 0; n < s->cap; i = (i + 1) & (s->cap - 1), n++) {
    if (s->slots[i] == 0) return 0;
    if (s->slots[i] == id) return 1;
  }
  return 0;
}

static int idset_add(idset_t *s, uint64_t id);

static int idset_grow(idset_t *s) {
  size_t cap = s->cap ? s->cap * 2 : 1024;
  idset_t n = { calloc(cap, sizeof(uint64_t)), cap, 0, 0 };
  if (n.slots == NULL) return -1;
  for (size_t i = 0; i < s->cap; i++) if (s->slots[i] != 0 && s->slots[i] != TOMB) idset_add(&n, s->slots[i]);
  free(s->slots);
  *s = n;
  return 0;
}

static int idset_add(idset_t *s, uint64_t id) {
  if (id == 0 || id == TOMB || idset_has(s, id)) return 0;
  if ((s->used + 1) * 2 > s->cap && idset_grow(s) < 0) return -1;
  size_t i = idhash(id, s->cap);
  while (s->slots[i] != 0 && s->slots[i] != TOMB) i = (i + 1) & (s->cap - 1);
  if (s->slots[i] == 0) s->used++;
  s->slots[i] = id;
  s->live++;
  return 0;
}

static void idset_del(idset_t *s, uint64_t id) {
  if (s->cap == 0) return;
  for (size_t i = idhash(id, s->cap), n = 0; n < s->cap; i = (i + 1) & (s->cap - 1), n++) {
    if (s->slots[i] == 0) return;
    if (s->slots[i] == id) {
      s->slots[i] = TOMB;
      s->live--;
      return;
    }
  }
}

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
  idset_t nocaps;
  double fast;
} reader_t;

/* fuse_in_header (40 bytes) + fuse_getxattr_in (8) + "security.capability\0" (20). */
#define CAP_NAME "security.capability"
#define CAP_REQ_LEN (40 + 8 + 20)

/* Answer a GETXATTR of security.capability for an inode known to have none. */
static int try_fast(reader_t *r, size_t n) {
  const unsigned char *b = (const unsigned char *)r->buf;
  if (n != CAP_REQ_LEN || r->nocaps.live == 0) return 0;
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  memcpy(&len, b, 4);
  memcpy(&opcode, b + 4, 4);
  memcpy(&unique, b + 8, 8);
  memcpy(&nodeid, b + 16, 8);
  if (len != n || opcode != 22 || memcmp(b + 48, CAP_NAME, 20) != 0 || !idset_has(&r->nocaps, nodeid)) return 0;
  unsigned char out[16];
  uint32_t olen = 16;
  int32_t err = -ENODATA;
  memcpy(out, &olen, 4);
  memcpy(out + 4, &err, 4);
  memcpy(out + 8, &unique, 8);
  /* ENOENT: the request was interrupted meanwhile; nothing to do. */
  if (write(r->fd, out, sizeof(out)) < 0 && errno != ENOENT) return 0;
  r->fast++;
  return 1;
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)

static void on_close(uv_handle_t *h) {
  reader_t *r = h->data;
  free(r->nocaps.slots);
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
    if (try_fast(r, (size_t)n)) {
      i--; /* answered here: does not count against the batch */
      continue;
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

static napi_value no_caps(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  reader_t *r;
  CHECK(napi_get_value_external(env, argv[0], (void **)&r));
  uint64_t id;
  bool lossless, known;
  CHECK(napi_get_value_bigint_uint64(env, argv[1], &id, &lossless));
  CHECK(napi_get_value_bool(env, argv[2], &known));
  if (known) {
    if (idset_add(&r->nocaps, id) < 0) napi_throw_error(env, NULL, "out of memory");
  } else {
    idset_del(&r->nocaps, id);
  }
  return NULL;
}

static napi_value fast_count(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  reader_t *r;
  CHECK(napi_get_value_external(env, argv[0], (void **)&r));
  CHECK(napi_create_double(env, r->fast, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, stop, NULL, NULL, NULL, napi_default, NULL},
    {"noCaps", NULL, no_caps, NULL, NULL, NULL, napi_default, NULL},
    {"fastCount", NULL, fast_count, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 4, d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
