package chstore

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

// The chDB C API (libchdb.so, v3). We declare only what we call and resolve
// it with dlsym, so the binary builds and starts without the library and
// only the embedded engine needs it.
typedef void *(*chdb_connect_fn)(int, char **);
typedef void (*chdb_close_conn_fn)(void *);
typedef void *(*chdb_query_n_fn)(void *, const char *, size_t, const char *, size_t);
typedef void (*chdb_destroy_fn)(void *);
typedef char *(*chdb_buffer_fn)(void *);
typedef size_t (*chdb_length_fn)(void *);
typedef const char *(*chdb_error_fn)(void *);

static void *lib;
static chdb_connect_fn p_connect;
static chdb_close_conn_fn p_close;
static chdb_query_n_fn p_query_n;
static chdb_destroy_fn p_destroy;
static chdb_buffer_fn p_buffer;
static chdb_length_fn p_length;
static chdb_error_fn p_error;

static const char *sp_chdb_load(const char *path) {
	if (lib) return NULL;
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) return dlerror();
	p_connect = (chdb_connect_fn)dlsym(h, "chdb_connect");
	p_close = (chdb_close_conn_fn)dlsym(h, "chdb_close_conn");
	p_query_n = (chdb_query_n_fn)dlsym(h, "chdb_query_n");
	p_destroy = (chdb_destroy_fn)dlsym(h, "chdb_destroy_query_result");
	p_buffer = (chdb_buffer_fn)dlsym(h, "chdb_result_buffer");
	p_length = (chdb_length_fn)dlsym(h, "chdb_result_length");
	p_error = (chdb_error_fn)dlsym(h, "chdb_result_error");
	if (!p_connect || !p_close || !p_query_n || !p_destroy || !p_buffer || !p_length || !p_error) {
		dlclose(h);
		return "libchdb.so lacks the chdb v3 C API (chdb_connect, chdb_query_n, chdb_result_*)";
	}
	lib = h;
	return NULL;
}

// chdb_connect installs ClickHouse's own signal handlers, SIGSEGV included,
// which turns a recoverable Go nil-pointer panic into a dead process. We save
// every handler before the call and put them back after it.
static void *sp_chdb_connect(int argc, char **argv) {
	struct sigaction saved[NSIG];
	for (int s = 1; s < NSIG; s++) sigaction(s, NULL, &saved[s]);
	void *conn = p_connect(argc, argv);
	for (int s = 1; s < NSIG; s++) {
		if (s == SIGKILL || s == SIGSTOP) continue;
		sigaction(s, &saved[s], NULL);
	}
	return conn;
}

static void sp_chdb_close(void *conn) { p_close(conn); }

static void *sp_chdb_query(void *conn, const char *q, size_t qlen, const char *fmt) {
	return p_query_n(*(void **)conn, q, qlen, fmt, strlen(fmt));
}
static const char *sp_chdb_result_error(void *r) { return p_error(r); }
static char *sp_chdb_result_buffer(void *r) { return p_buffer(r); }
static size_t sp_chdb_result_length(void *r) { return p_length(r); }
static void sp_chdb_destroy(void *r) { p_destroy(r); }
*/
import "C"

import (
	"errors"
	"unsafe"
)

// chdbLoad dlopens libchdb.so once per process.
func chdbLoad(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.sp_chdb_load(cpath); msg != nil {
		return errors.New(C.GoString(msg))
	}
	return nil
}

// chdbConnect opens a chDB session with clickhouse-local style arguments.
func chdbConnect(args []string) (unsafe.Pointer, error) {
	argv := make([]*C.char, len(args))
	for i, a := range args {
		argv[i] = C.CString(a)
	}
	defer func() {
		for _, p := range argv {
			C.free(unsafe.Pointer(p))
		}
	}()
	conn := C.sp_chdb_connect(C.int(len(args)), &argv[0])
	if conn == nil || *(*unsafe.Pointer)(conn) == nil {
		return nil, errors.New("chdb_connect failed (is another process using the data folder?)")
	}
	return conn, nil
}

func chdbClose(conn unsafe.Pointer) { C.sp_chdb_close(conn) }

// chdbQuery runs one statement and returns its output in the given format,
// copied into Go memory.
func chdbQuery(conn unsafe.Pointer, query, format string) ([]byte, error) {
	if query == "" {
		return nil, errors.New("empty query")
	}
	// chdb_query_n takes the length, so the query is passed in place: an
	// insert's rows can be tens of megabytes, and they hold no Go pointers,
	// which cgo allows for the duration of the call.
	cq := (*C.char)(unsafe.Pointer(unsafe.StringData(query)))
	cf := C.CString(format)
	defer C.free(unsafe.Pointer(cf))
	r := C.sp_chdb_query(conn, cq, C.size_t(len(query)), cf)
	if r == nil {
		return nil, errors.New("chdb_query returned no result")
	}
	defer C.sp_chdb_destroy(r)
	if msg := C.sp_chdb_result_error(r); msg != nil {
		return nil, errors.New(C.GoString(msg))
	}
	n := C.sp_chdb_result_length(r)
	if n == 0 {
		return nil, nil
	}
	return C.GoBytes(unsafe.Pointer(C.sp_chdb_result_buffer(r)), C.int(n)), nil
}
