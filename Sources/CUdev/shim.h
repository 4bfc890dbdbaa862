#ifndef DO_STORAGE_CUDEV_SHIM_H
#define DO_STORAGE_CUDEV_SHIM_H
#include <libudev.h>
#endif
