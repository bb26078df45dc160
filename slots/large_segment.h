/* large_segment.h: segments of one large object each (see large_segment.c). */
#ifndef SMI_LARGE_SEGMENT_H
#define SMI_LARGE_SEGMENT_H

#include "harden.h"
#include "segment.h"

/* A large segment holding one object of size bytes whose address is a multiple
 * of align; its generation is made live. NULL if the OS refuses. */
smi_segment_t *smi_large_new(size_t size, size_t align);
/* Ends the large object's life in the maps (handles stale, address not ours),
 * then unmaps it. */
void smi_large_unmap(smi_segment_t *seg);
/* Makes a cached large segment hold a new object (a new epoch); false, and
 * nothing done, when its id's epochs are used up and no fresh id can be had
 * (the object would come back under the tag of its last life). */
bool smi_large_revive(smi_segment_t *seg);
/* Marks the object dead in the maps without unmapping (for the cache). */
void smi_large_kill(smi_segment_t *seg);
/* Tries to make the large object size bytes without moving it (or by moving
 * its pages); returns the object's address, or NULL. A growth takes a quarter
 * more for the next one and a shrink keeps the tail unless it is most of the
 * mapping; exact (under a byte cap, which counts the mapping): neither. */
void *smi_large_resize(smi_segment_t **segp, size_t size, bool exact);
/* The bytes mapped for large objects, the cached ones included. */
size_t smi_large_mapped(void);
/* The handle tag a live large object carries. */
static inline uint64_t smi_large_tag(const smi_segment_t *seg) {
  return ((uint64_t)smi_segtab[seg->id].epoch << 8) | __atomic_load_n(&seg->large_gen, __ATOMIC_RELAXED);
}

/* Where the object starts in its segment, and the bytes it may use (the
 * hardened build: up to its trailing guard page; such a segment is only
 * shrunk, never grown: its guard pages split the mapping). */
static inline size_t smi_large_offset(const smi_segment_t *seg) { return (size_t)(seg->large_obj - (uint8_t *)seg); }
static inline size_t smi_large_room(const smi_segment_t *seg) {
  return seg->map_size - smi_large_offset(seg) - SMI_HD_GUARD;
}
/* The room an exact growth to size bytes gives (whole pages). */
size_t smi_large_room_for(const smi_segment_t *seg, size_t size);

#endif
