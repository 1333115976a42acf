/* blcr_errcodes.h: BLCR's error numbers (errno values above the system's). */
#ifndef _BLCR_ERRCODES_H
#define _BLCR_ERRCODES_H 1

enum {
    CR_MIN_ERRCODE = 2353,
    CR_ETEMPFAIL,      /* 2354 a callback asked to try again later */
    CR_EPERMFAIL,      /* 2355 a callback could not be checkpointed: the job was killed */
    CR_ENOSUPPORT,     /* 2356 */
    CR_EVERSION,       /* 2357 */
    CR_EOMITTED,       /* 2358 cr_checkpoint(CR_CHECKPOINT_OMIT) */
    CR_EBADARCH,       /* 2359 */
    CR_EPTRACED,       /* 2360 */
    CR_EPTRACER,       /* 2361 */
    CR_ERSTRTABRT,     /* 2362 */
    CR_ERESTARTED,     /* 2363 reaping one's own checkpoint in the restarted copy */
    CR_ENOTCB,         /* 2364 only valid in a callback */
    CR_ENOINIT,        /* 2365 cr_init() was not called */
    CR_MAX_ERRCODE     /* 2366 */
};

#endif
