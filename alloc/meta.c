/* meta.c: memory for the allocator's own structs (arenas, heaps). It comes
 * straight from the OS in 64 KiB chunks and is recycled by size, so no arena
 * struct ever lives inside an arena. The first chunk is a static one of the
 * size of one thread heap, in the library's .bss: a single-threaded program
 * maps no chunk (its heap's page lies among .bss pages the process has
 * resident anyway: one page and two system calls less at start-up). */
#include <string.h>

#include "internal.h"
#include "slots/os.h"

#define META_CHUNK ((size_t)64 << 10)
#define META_SIZES 4

static smi_lock_t meta_lock = SMI_LOCK_INIT;
static struct {
  size_t size;
  void *free;
} pools[META_SIZES];
/* the first chunk: one heap (heap.c allocates the first thread's before anything else) */
static char first_chunk[(sizeof(smi_heap_t) + 63) & ~(size_t)63] __attribute__((aligned(64)));
static char *chunk_cur = first_chunk, *chunk_end = first_chunk + sizeof first_chunk;

/* In a fork child: a thread the child does not have may have been half way
 * through a pop or a new chunk: start afresh (what was free stays unused). */
void smi_meta_after_fork(bool *mine) {
  if (!smi_lock_orphaned(&meta_lock, mine)) return;
  for (int i = 0; i < META_SIZES; i++) pools[i].free = NULL;
  chunk_cur = chunk_end = NULL;
}

void *smi_meta_alloc(size_t size) {
  size = (size + 63) & ~(size_t)63;
  void *p = NULL;
  smi_lock(&meta_lock);
  for (int i = 0; i < META_SIZES; i++) {
    if (pools[i].size == size && pools[i].free) {
      p = pools[i].free;
      pools[i].free = *(void **)p;
      break;
    }
  }
  if (!p) {
    if ((size_t)(chunk_end - chunk_cur) < size) {
      size_t want = size > META_CHUNK ? size : META_CHUNK;
      chunk_cur = smi_os_map_aligned(want, SMI_OS_PAGE);
      chunk_end = chunk_cur ? chunk_cur + want : NULL;
    }
    if (chunk_cur) {
      p = chunk_cur;
      chunk_cur += size;
    }
  }
  smi_unlock(&meta_lock);
  if (p) memset(p, 0, size);
  return p;
}

void smi_meta_free(void *p, size_t size) {
  size = (size + 63) & ~(size_t)63;
  smi_lock(&meta_lock);
  for (int i = 0; i < META_SIZES; i++) {
    if (pools[i].size == 0) pools[i].size = size;
    if (pools[i].size == size) {
      *(void **)p = pools[i].free;
      pools[i].free = p;
      break;
    }
  }
  smi_unlock(&meta_lock);
}
