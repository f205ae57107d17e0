/* Linux headers the Swift Glibc module does not export: epoll, eventfd, malloc.h
 * (mallopt, to keep block-sized buffers on the heap) and sync_file_range (a GNU
 * extension the module's headers hide). Headers only. */
#ifndef GRID_CEPOLL_SHIM_H
#define GRID_CEPOLL_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <malloc.h>

extern int sync_file_range(int fd, long long offset, long long nbytes, unsigned int flags);
#define GRID_SYNC_FILE_RANGE_WRITE 2
#endif
