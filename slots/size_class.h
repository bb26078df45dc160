/* size_class.h: the size classes of slots.
 *
 * Classes are multiples of 16 (every object of 16 bytes or more is 16-aligned):
 * 16..128 in steps of 16, then 8 classes per doubling up to 256 KiB, so the
 * waste inside a slot is at most 12.5% above 128 bytes (below 128 the 16-byte
 * alignment floor sets the step). Larger objects are mapped directly. */
#ifndef SMI_SIZE_CLASS_H
#define SMI_SIZE_CLASS_H

#include <stddef.h>
#include <stdint.h>

#define SMI_CLASSES 96
#define SMI_SMALL_MAX ((size_t)262144) /* the largest slot */
#define SMI_DIRECT_MAX ((size_t)1024)  /* sizes served by one table look-up */
#define SMI_DIRECT_BINS (SMI_DIRECT_MAX / 16 + 1)

extern const uint32_t smi_class_size[SMI_CLASSES];
extern const uint8_t smi_direct_class[SMI_DIRECT_BINS]; /* (size+15)/16 -> class */

/* The class of a size; size <= SMI_SMALL_MAX. */
static inline unsigned smi_class_of(size_t size) {
  if (size <= SMI_DIRECT_MAX) return smi_direct_class[(size + 15) >> 4];
  size_t w = size - 1;
  unsigned b = 63u - (unsigned)__builtin_clzll(w); /* 2^b <= w < 2^(b+1), b >= 10 */
  unsigned step = (unsigned)((w >> (b - 3)) & 7);
  return 8 + (b - 7) * 8 + step;
}

#endif
