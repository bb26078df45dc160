/* valgrind.h: what memcheck is told about slotmalloc's objects, in a build with
 * -DSLOTMALLOC_VALGRIND=ON (SMI_VALGRIND); every macro is empty otherwise, so the
 * default build's code is unchanged. Run memcheck with
 * --soname-synonyms=somalloc=NONE so that slotmalloc stays the allocator
 * (README, "valgrind").
 *
 * The model, as memcheck sees a slot's memory:
 *   live object  a block memcheck tracks as if malloc'd (MALLOCLIKE), of the
 *                slot's usable size, undefined until written: born where a slot
 *                leaves its freelist (arena.c pop) or a large object is handed
 *                out (large.c);
 *   dead slot    no access (FREELIKE at each death: free.c, the large object's
 *                kill in large.c, every live slot of a closing arena in tree.c);
 *                so are slots not cut yet (segment.c);
 *   link         the allocator's own reads and writes of the in-place freelist
 *                (smi_free_t, at a free slot's start) are bracketed: defined
 *                only while slotmalloc touches it (segment.c, arena.c, free.c);
 *   metadata     block descriptors, generation tables, a large object's segment
 *                header: always defined, but for the words that point at an
 *                object (a block's start, a large object's address in its
 *                header and in smi_segtab): those are hidden from the leak scan
 *                (no access, their address errors not reported), or memcheck
 *                would count the object reachable.
 * The inline fast paths (alloc/internal.h) know nothing of this: in this build
 * every arena carries a cap of SIZE_MAX (no cap at all in effect), and a capped
 * arena's mallocs and frees all take the slow paths, where memcheck is told. */
#ifndef SMI_VALGRIND_H
#define SMI_VALGRIND_H

#include "segment.h"

#ifdef SMI_VALGRIND
#include <valgrind/memcheck.h>

#define SMI_VG_ON 1
#define SMI_VG_BORN(p, size, zeroed) VALGRIND_MALLOCLIKE_BLOCK((p), (size), 0, (zeroed))
#define SMI_VG_DIED(p) VALGRIND_FREELIKE_BLOCK((p), 0)
#define SMI_VG_LINK_OPEN(p) VALGRIND_MAKE_MEM_DEFINED((p), sizeof(smi_free_t))
#define SMI_VG_LINK_CLOSE(p) VALGRIND_MAKE_MEM_NOACCESS((p), sizeof(smi_free_t))
#define SMI_VG_NOACCESS(p, n) VALGRIND_MAKE_MEM_NOACCESS((p), (n))
#define SMI_VG_UNDEFINED(p, n) VALGRIND_MAKE_MEM_UNDEFINED((p), (n))
#define SMI_VG_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#define SMI_VG_HIDE(p, n)                                     \
  do {                                                        \
    VALGRIND_MAKE_MEM_NOACCESS((p), (n));                     \
    VALGRIND_DISABLE_ADDR_ERROR_REPORTING_IN_RANGE((p), (n)); \
  } while (0)

/* Every live slot of b dies (its arena closes): called before the sweep that
 * advances their generations. */
static inline void smi_vg_block_dies(const smi_block_t *b) {
  for (uint32_t i = 0; i < b->bump; i++)
    if (smi_gen_is_live(__atomic_load_n(&b->gens[i], __ATOMIC_RELAXED)))
      VALGRIND_FREELIKE_BLOCK(smi_slot_addr(b, i), 0);
}

#else
#define SMI_VG_ON 0
#define SMI_VG_BORN(p, size, zeroed) ((void)0)
#define SMI_VG_DIED(p) ((void)0)
#define SMI_VG_LINK_OPEN(p) ((void)0)
#define SMI_VG_LINK_CLOSE(p) ((void)0)
#define SMI_VG_NOACCESS(p, n) ((void)0)
#define SMI_VG_UNDEFINED(p, n) ((void)0)
#define SMI_VG_DEFINED(p, n) ((void)0)
#define SMI_VG_HIDE(p, n) ((void)0)
static inline void smi_vg_block_dies(const smi_block_t *b) { (void)b; }
#endif

#endif
