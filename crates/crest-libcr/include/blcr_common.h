/* blcr_common.h: version macros and the checkpoint signal, as BLCR 0.8.6 named them.
 * Part of crest's libcr (crates/crest-libcr). */
#ifndef _BLCR_COMMON_H
#define _BLCR_COMMON_H 1

#define CR_RELEASE_MAJOR   0
#define CR_RELEASE_MINOR   8
#define CR_RELEASE_PATCH   6_b4
#define CR_RELEASE_VERSION "0.8.6_b4"

#define LIBCR_MAJOR   0
#define LIBCR_MINOR   5
#define LIBCR_PATCH   5
#define LIBCR_VERSION "0.5.5"

#define CR_MODULE_MAJOR   0
#define CR_MODULE_MINOR   10
#define CR_MODULE_PATCH   3
#define CR_MODULE_VERSION "0.10.3"

/* The real-time signal libcr takes (SIGRTMAX on x86-64). */
#define CR_SIGNUM 64

/* There is no kernel module in crest; the name is kept for programs that print it. */
#define CR_CTRL_FILE "/proc/checkpoint/ctrl"

#endif
