/* handle.c: 64-bit generational handles.
 *
 * Layout, high bits first:
 *   63..44  segment id (20)      which segment (smi_segtab)
 *   43..38  block (6)            which block of the segment (0 for a large object)
 *   37..26  slot (12)            which slot of the block (0 for a large object)
 *   25..9   epoch (17)           the block's epoch (a large object: its id's)
 *    8..1   generation (8)       the slot's generation while live (bit 8 set)
 *       0   parity               makes the number of set bits odd
 * The parity bit means that changing any one bit of a valid handle gives an
 * invalid one, whatever the other fields say; 0 is never valid. */
#include "internal.h"

#define H_ID_SHIFT 44
#define H_BLOCK_SHIFT 38
#define H_SLOT_SHIFT 26
#define H_EPOCH_SHIFT 9
#define H_GEN_SHIFT 1
#define H_EPOCH_MASK (((uint64_t)1 << SMI_EPOCH_BITS) - 1)
#define H_BLOCK_MASK ((uint64_t)63)  /* 6 bits: a segment has at most 63 blocks */
#define H_SLOT_MASK ((uint64_t)4095) /* 12 bits: a block has at most 4095 slots */
/* block and slot together: both 0 in a large object's handle */
#define H_PLACE_MASK ((H_BLOCK_MASK << (H_BLOCK_SHIFT - H_SLOT_SHIFT)) | H_SLOT_MASK)
/* epoch and generation together, as a live object's tag (epoch << 8 | generation) */
#define H_TAG_MASK ((H_EPOCH_MASK << 8) | 255)

/* The fields of a handle. */
static inline uint32_t h_id(sm_handle_t h) { return (uint32_t)(h >> H_ID_SHIFT); }
static inline uint32_t h_block(sm_handle_t h) { return (uint32_t)((h >> H_BLOCK_SHIFT) & H_BLOCK_MASK); }
static inline uint32_t h_slot(sm_handle_t h) { return (uint32_t)((h >> H_SLOT_SHIFT) & H_SLOT_MASK); }
static inline uint32_t h_place(sm_handle_t h) { return (uint32_t)((h >> H_SLOT_SHIFT) & H_PLACE_MASK); }
static inline uint64_t h_tag(sm_handle_t h) { return (h >> H_GEN_SHIFT) & H_TAG_MASK; }

static inline sm_handle_t with_parity(uint64_t h) { return h | (uint64_t)!__builtin_parityll(h); }

static sm_handle_t make(uint32_t id, uint32_t block, uint32_t slot, uint32_t epoch, uint8_t gen) {
  uint64_t h = ((uint64_t)id << H_ID_SHIFT) | ((uint64_t)block << H_BLOCK_SHIFT) | ((uint64_t)slot << H_SLOT_SHIFT) |
               (((uint64_t)epoch & H_EPOCH_MASK) << H_EPOCH_SHIFT) | ((uint64_t)gen << H_GEN_SHIFT);
  return with_parity(h);
}

sm_handle_t sm_handle_of(const void *p) {
  uintptr_t u = (uintptr_t)p;
  if (smi_map_of(u) == SMI_MAP_SLOTS) {
    smi_segment_t *seg = smi_segment_at(u);
    smi_block_t *b = smi_block_at(seg, u);
    uint32_t i;
    uint32_t epoch = atomic_load_explicit(&b->epoch, memory_order_acquire);
    if (!smi_slot_is_live(b, u, &i)) return 0;
    smi_block_name(b); /* before the generation the handle carries is read: see smi_block_wrap_retires */
    _Atomic uint8_t *g = smi_gen_at(b, i);
    uint8_t gen = g ? atomic_load_explicit(g, memory_order_acquire) : 0;
    if (!smi_gen_is_live(gen)) return 0; /* freed (or re-cut) meanwhile */
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&b->epoch, memory_order_relaxed) != epoch) return 0; /* re-cut meanwhile */
    return make(seg->id, b->index, i, epoch, gen);
  }
  smi_segment_t *seg = smi_large_of(p);
  if (!seg || seg->large_gen != 1) return 0;
  return with_parity(smi_large_tag(seg) << H_GEN_SHIFT | ((uint64_t)seg->id << H_ID_SHIFT));
}

/* The block and slot a small-object handle names, if it is live now. The
 * generation is read before the epoch: a generation of a later epoch of
 * the block is always seen with that epoch, which the handle
 * does not carry. A block index past the segment's blocks reads a zeroed
 * descriptor (nslots 0) in the header page. */
static inline __attribute__((always_inline)) void *deref_small(smi_segment_t *seg, sm_handle_t h, uint32_t *ip) {
  smi_block_t *b = &seg->blocks[h_block(h)];
  uint32_t i = h_slot(h);
  if (i >= atomic_load_explicit((_Atomic uint32_t *)&b->nslots, memory_order_acquire)) return NULL;
  _Atomic uint8_t *gp = smi_gen_at(b, i);
  if (!gp) return NULL; /* re-cut meanwhile */
  uint8_t g = atomic_load_explicit(gp, memory_order_acquire);
  uint32_t e = atomic_load_explicit(&b->epoch, memory_order_acquire);
  uint64_t want = ((uint64_t)(e & H_EPOCH_MASK) << 8) | g;
  if (!smi_gen_is_live(g) || want != h_tag(h)) return NULL;
  /* The block may be re-cut meanwhile (its last object freed): read its
   * geometry, then check the epoch did not move (see smi_block_format). */
  uint8_t *start = __atomic_load_n(&b->start, __ATOMIC_RELAXED);
  size_t size = __atomic_load_n(&b->size, __ATOMIC_RELAXED);
  atomic_thread_fence(memory_order_acquire);
  if (atomic_load_explicit(&b->epoch, memory_order_relaxed) != e) return NULL;
  /* i was checked against nslots before e was read: a cut that moved the
   * epoch in between publishes its own nslots last (0 until then) */
  if (i >= atomic_load_explicit((_Atomic uint32_t *)&b->nslots, memory_order_relaxed)) return NULL;
  if (ip) *ip = i;
  return start + (size_t)i * size;
}

void *sm_deref(sm_handle_t h) {
  if (!__builtin_parityll(h)) return NULL;
  smi_segslot_t *slot = &smi_segtab[smi_id_in_reach(h_id(h))];
  smi_segment_t *seg = atomic_load_explicit(&slot->seg, memory_order_acquire);
  if (!seg) return NULL;
  if (smi_unlikely(slot->is_large)) {
    /* Only the table is read: the segment may be unmapped at any moment. */
    uint64_t tag = atomic_load_explicit(&slot->large_tag, memory_order_acquire);
    if (!tag || tag != h_tag(h) || h_place(h)) return NULL;
    return atomic_load_explicit(&slot->large_obj, memory_order_acquire);
  }
  return deref_small(seg, h, NULL);
}

int sm_hfree(sm_handle_t h) {
  if (!__builtin_parityll(h)) return ESTALE;
  uint32_t id = smi_id_in_reach(h_id(h));
  smi_segslot_t *slot = &smi_segtab[id];
  smi_segment_t *seg = atomic_load_explicit(&slot->seg, memory_order_acquire);
  if (!seg) return ESTALE;
  if (slot->is_large) {
    if (h_place(h)) return ESTALE;
    return smi_large_hfree(id, h_tag(h)) ? 0 : ESTALE;
  }
  /* Announce the free before validating: a block is not re-cut (nor
   * dismantled) while a free is under way in it, so what is validated is what
   * is freed. */
  smi_block_t *b = &seg->blocks[h_block(h)];
  atomic_fetch_add_explicit(&b->inflight, 1, memory_order_seq_cst);
  uint32_t i;
  void *p = smi_block_closing(b) ? NULL : deref_small(seg, h, &i);
  int err = p && smi_slot_free_checked(b, i, p, (uint8_t)(h >> H_GEN_SHIFT)) ? 0 : ESTALE;
  smi_block_free_done(b);
  return err;
}

sm_handle_t sm_halloc(size_t size) {
  void *p = smi_malloc(size);
  return p ? sm_handle_of(p) : 0;
}

sm_handle_t sm_arena_halloc(sm_arena_t *a, size_t size) {
  void *p = sm_arena_malloc(a, size);
  return p ? sm_handle_of(p) : 0;
}
