/* static_dlopen_module.c: a shared library that static_dlopen_prog and
 * test_edge_lifecycle load with dlopen. Its constructor creates a thread key
 * and allocates, its destructor frees and deletes the key; module_thread sets
 * the key on the calling thread (freed by the key's destructor at that
 * thread's exit). Linked with libc.so: in the static program it brings a
 * second libc, whose thread keys start at 0 again (see static_dlopen_prog.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_key_t key;
static void *kept[64];

static void key_done(void *v) { free(v); }

__attribute__((constructor)) static void module_init(void) {
  pthread_key_create(&key, key_done);
  for (int i = 0; i < 64; i++) {
    kept[i] = malloc(16 + (size_t)i * 40);
    if (kept[i]) memset(kept[i], 1, 16 + (size_t)i * 40);
  }
}

__attribute__((destructor)) static void module_fini(void) {
  for (int i = 0; i < 64; i++) free(kept[i]);
  pthread_key_delete(key);
}

/* Sets the module's key on this thread to a block of its own malloc. */
__attribute__((visibility("default"))) void *module_thread(void *arg) {
  pthread_setspecific(key, malloc(100));
  return arg;
}
