/* size_class.c: the class tables, computed by the compiler from one formula. */
#include "size_class.h"

/* clang-format off: the tables read as rows */
#define CLS_LOW(i) (16u * ((i) + 1))                               /* classes 0..7: 16..128 */
#define CLS_HIGH(b, s) ((1u << (b)) + ((s) + 1) * (1u << ((b)-3))) /* (2^b, 2^(b+1)] */
#define CLS_ROW(b)                                                                                                \
  CLS_HIGH(b, 0), CLS_HIGH(b, 1), CLS_HIGH(b, 2), CLS_HIGH(b, 3), CLS_HIGH(b, 4), CLS_HIGH(b, 5), CLS_HIGH(b, 6), \
      CLS_HIGH(b, 7)

const uint32_t smi_class_size[SMI_CLASSES] = {
    CLS_LOW(0),  CLS_LOW(1),  CLS_LOW(2),  CLS_LOW(3),  CLS_LOW(4),  CLS_LOW(5),  CLS_LOW(6),
    CLS_LOW(7),  CLS_ROW(7),  CLS_ROW(8),  CLS_ROW(9),  CLS_ROW(10), CLS_ROW(11), CLS_ROW(12),
    CLS_ROW(13), CLS_ROW(14), CLS_ROW(15), CLS_ROW(16), CLS_ROW(17),
};

/* (size+15)/16 for size 0..1024 -> class; row k covers 16-byte steps. */
#define D8(c) c, c, c, c, c, c, c, c
const uint8_t smi_direct_class[SMI_DIRECT_BINS] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,                              /* 0..128 */
    8,  9,  10, 11, 12, 13, 14, 15,                                 /* 144..256 */
    16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22, 23, 23, /* 288..512 */
    24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 27, 27, 27, 27, /* 576..768 */
    28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31, 31, /* 832..1024 */
};
/* clang-format on */
