/* api.c: the sm_ malloc family and the arena allocation entry points: argument
 * checks and errno, then the fast paths of internal.h. */
#include <string.h>

#include "internal.h"

void *sm_malloc(size_t size) { return smi_malloc(size); }

void sm_free(void *p) { smi_free(p); }

void *sm_calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  if (total <= SMI_DIRECT_MAX) {
    void *p = smi_malloc(total);
    if (p) memset(p, 0, total);
    return p;
  }
  return smi_malloc_generic(smi_tls_cur, total, true);
}

/* An object of size bytes aligned to alignment (a power of two), in arena a
 * (NULL: where plain malloc allocates). */
static void *aligned(sm_arena_t *a, size_t alignment, size_t size) {
  if (alignment <= 16) return a ? smi_arena_alloc(a, size, 16, false) : smi_malloc(size);
  if (!a && !(a = smi_arena_current())) {
    errno = ENOMEM;
    return NULL;
  }
  return smi_arena_alloc(a, size, alignment, false);
}

static bool power_of_two(size_t x) { return x && !(x & (x - 1)); }

void *sm_aligned_alloc(size_t alignment, size_t size) {
  if (!power_of_two(alignment)) {
    errno = EINVAL;
    return NULL;
  }
  return aligned(NULL, alignment, size);
}

int sm_posix_memalign(void **out, size_t alignment, size_t size) {
  if (!out || !power_of_two(alignment) || alignment % sizeof(void *)) return EINVAL;
  int saved = errno;
  void *p = aligned(NULL, alignment, size);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

size_t sm_usable_size(const void *p) { return p ? smi_usable_size(p) : 0; }

void *sm_realloc(void *p, size_t size) {
  if (!p) return smi_malloc(size);
  if (size == 0) {
    smi_free(p);
    return NULL;
  }
  uintptr_t u = (uintptr_t)p;
  size_t old, want = size;
  if (smi_map_of(u) == SMI_MAP_SLOTS) {
    smi_block_t *b = smi_block_at(smi_segment_at(u), u);
    uint32_t i;
    if (!smi_slot_is_live(b, u, &i)) {
      smi_report(SMI_ERR_INVALID_REALLOC, p, 0);
      return NULL;
    }
    old = smi_hd_size_of(b, p); /* the slot's size; the hardened build: the bytes asked, canary checked */
    size_t room = b->size - SMI_HD_TAIL;
    if (size <= room && (size > room / 2 || room <= 64)) return smi_hd_restamp(b, p, size); /* fits */
    /* Growth by small steps (appends): take a quarter more, so the object
     * moves about half as often as the 8 classes per doubling would make it. */
    if (size > room && size - room < room / 4 && room >= 256) {
      want = room + room / 4;
      if (want > SMI_SMALL_MAX && size <= SMI_SMALL_MAX) want = SMI_SMALL_MAX;
    }
  } else {
    smi_segment_t *seg = smi_large_of(p);
    if (!seg || seg->large_gen != 1) {
      smi_report(SMI_ERR_INVALID_REALLOC, p, 0);
      return NULL;
    }
    old = seg->large_size;
    if (size > SMI_SMALL_MAX && size <= PTRDIFF_MAX) {
      bool dead;
      void *q = smi_large_realloc(seg, size, &dead);
      if (dead) {
        smi_report(SMI_ERR_DOUBLE_FREE, p, 0);
        return NULL;
      }
      if (q) return q;
    }
  }
  void *q = smi_malloc(want);
  if (!q && want != size) q = smi_malloc(size);
  if (!q) return NULL; /* errno is ENOMEM; p is untouched */
  memcpy(q, p, old < size ? old : size);
  smi_free(p);
  return q;
}

void *sm_reallocarray(void *p, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return sm_realloc(p, total);
}

/* ---- arena entry points ------------------------------------------------------ */

/* An arena this thread may allocate in: open, and a user arena or the thread's
 * own root. Another thread's root (and the orphans' arena) is allocated in by
 * its owner without a lock: a second thread there corrupted its blocks. */
static bool arena_usable(sm_arena_t *a) {
  if (!a || smi_arena_is_closed(a) || (a->type != SMI_ARENA_USER && a != smi_root_arena())) {
    errno = EINVAL;
    return false;
  }
  return true;
}

void *sm_arena_malloc(sm_arena_t *a, size_t size) {
  return arena_usable(a) ? smi_arena_alloc(a, size, 16, false) : NULL;
}

void *sm_arena_calloc(sm_arena_t *a, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return arena_usable(a) ? smi_arena_alloc(a, total, 16, true) : NULL;
}

void *sm_arena_aligned_alloc(sm_arena_t *a, size_t alignment, size_t size) {
  if (!power_of_two(alignment)) {
    errno = EINVAL;
    return NULL;
  }
  return arena_usable(a) ? aligned(a, alignment, size) : NULL;
}

/* ---- the heap profile ----------------------------------------------------------- */

int sm_prof_dump(const char *path) { return smi_prof_write(path); }
