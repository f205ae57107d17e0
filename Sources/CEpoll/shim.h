/* Linux epoll and eventfd, which the Swift Glibc module does not export. Headers only. */
#ifndef GRID_CEPOLL_SHIM_H
#define GRID_CEPOLL_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
