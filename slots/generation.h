/* generation.h: a slot's 8-bit generation, and bulk operations over a block's
 * generation table, written so the compiler emits vector code (16
 * generations per instruction). Tables are padded to a multiple of 16 bytes
 * and 16-byte aligned.
 *
 * Encoding: bit 7 says live, bits 0-6 count the slot's cycles (allocation
 * sets bit 7; free clears it and advances the count, 127 wrapping to 0). It
 * is the sequence 0, 1, 2, ... of "odd = live" rotated right by one bit,
 * chosen for free's fast path: adding 0x81 to the byte frees a live slot, and
 * the add overflows (signed) exactly then, unless the slot is free (a double
 * or invalid free) or at the wrap (live, count 127). One add in memory and
 * one branch on the overflow flag (smi_gen_make_free in segment.h).
 * 0 (free, count 0) marks a slot that wrapped and retires, and table entries
 * past the last slot. Counts 0 and 1 are never live: fresh tables start at 2,
 * and a slot that wrapped and serves on restarts at 2 (SMI_GEN_RESTART). So
 * the value free's fast path leaves for a moment (until smi_free_undo puts
 * it back) is never the generation of a handle that could still be held:
 * from a free slot (0, c) it is (live, c + 1), a cycle still to come (in a
 * block a handle named, a slot retires at the wrap, so no count comes back);
 * from the wrap (live, 127) it is (live, 0), and from a retired slot or a
 * table entry past the last slot (0, 0) it is (live, 1), neither ever live.
 *
 * Memory order: a generation carries no data between threads (the remote
 * list, the locks and the epoch do), so its accesses are relaxed, with one
 * exception: the store that makes a slot live is a release, read with an
 * acquire by a handle's dereference before it reads the block's epoch, so that
 * a generation of a new epoch is never paired with the old epoch. */
#ifndef SMI_GENERATION_H
#define SMI_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMI_GEN_LIVE 0x80     /* the live bit */
#define SMI_GEN_WRAPPED 0     /* a slot that wrapped and retires (and table padding) */
#define SMI_GEN_RESTART 2     /* a slot that wrapped and serves on (counts 0 and 1 are never live) */
#define SMI_GEN_LAST 0xff     /* live at count 127: its free wraps */
#define SMI_GEN_FREE_ADD 0x81 /* live -> free: the add of free's fast path */

static inline bool smi_gen_is_live(uint8_t g) { return g & SMI_GEN_LIVE; }
/* A free slot's generation once it is handed out. */
static inline uint8_t smi_gen_allocated(uint8_t g) { return (uint8_t)(g | SMI_GEN_LIVE); }
/* A live slot's generation once it is freed (SMI_GEN_LAST gives SMI_GEN_WRAPPED). */
static inline uint8_t smi_gen_freed(uint8_t g) { return (uint8_t)((g + 1) & (SMI_GEN_LIVE - 1)); }
/* Live and not at the wrap: free's fast path may free it. */
static inline bool smi_gen_frees_plainly(uint8_t g) {
  return (uint8_t)(g - SMI_GEN_LIVE) < SMI_GEN_LAST - SMI_GEN_LIVE;
}

/* Advances every live generation, making its slot free and every handle
 * of it stale: the sweep behind closing an arena. Returns the live slots seen. */
size_t smi_gens_close(uint8_t *gens, size_t n);
/* Fills a fresh table: slot i starts at count 2 + i mod 32, so the slots of a
 * block reach the wrap (and retire) spread over 32 rounds of reuse, not all
 * in the same round, and none before its 95th allocation. */
void smi_gens_fresh(uint8_t *gens, size_t n);
/* The generation slot i starts at in a fresh table: a slot whose generation
 * still reads this has not been handed out since its block was cut. */
static inline uint8_t smi_gen_fresh(size_t i) { return (uint8_t)(SMI_GEN_RESTART + i % 16 + ((i / 16) & 1) * 16); }
/* Sets every generation to 0 (before a block is cut anew). */
void smi_gens_clear(uint8_t *gens, size_t n);
/* Counts the live generations. */
size_t smi_gens_count_live(const uint8_t *gens, size_t n);
/* Table length for n slots: one spare byte past the last slot, padded to 16. */
static inline size_t smi_gens_len(size_t nslots) { return (nslots + 1 + 15) & ~(size_t)15; }

#endif
