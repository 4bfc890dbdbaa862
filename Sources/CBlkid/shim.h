#ifndef DO_STORAGE_CBLKID_SHIM_H
#define DO_STORAGE_CBLKID_SHIM_H
#include <blkid.h>
#endif
