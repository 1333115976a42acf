/* libcr.h: the BLCR application interface (BLCR 0.8.6 names, types, constants and layouts),
 * implemented by crest's libcr (crates/crest-libcr; link with -lcr, or pkg-config libcr).
 * crest needs no kernel module: see docs/architecture.md, "libcr", for how a checkpoint
 * reaches the callbacks registered here. */
#ifndef _LIBCR_H
#define _LIBCR_H 1

#include <sys/types.h>
#include <sys/time.h>
#include "blcr_common.h"
#include "blcr_errcodes.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && ((__GNUC__ > 3) || (__GNUC__ == 3 && __GNUC_MINOR__ >= 2))
#define _CR_DEPRECATED __attribute__((deprecated))
#else
#define _CR_DEPRECATED
#endif

typedef int cr_version_t;
typedef int cr_client_id_t;
typedef int cr_callback_id_t;
typedef int (*cr_callback_t)(void *);
typedef unsigned int cr_spinlock_t;
typedef long cr_bool_t;
typedef unsigned long cr_checkpoint_handle_t;
typedef unsigned long cr_restart_handle_t;

typedef enum { CR_SCOPE_PROC, CR_SCOPE_PGRP, CR_SCOPE_SESS, CR_SCOPE_TREE } cr_scope_t;
typedef enum { cr_format_vmadump = 0 } cr_format_t;

#define CR_CHECKPOINT_ARGS_VERSION 1
#define CR_RESTART_ARGS_VERSION    1

typedef struct cr_checkpoint_args {
    cr_version_t cr_version;
    cr_scope_t   cr_scope;
    pid_t        cr_target;    /* 0: this process (its group, its session) */
    int          cr_fd;        /* where the image goes, or CR_DEST_CWD */
    int          cr_signal;    /* sent once the checkpoint is done (0: none) */
    unsigned int cr_timeout;   /* seconds, 0: no limit */
    unsigned int cr_flags;     /* CR_CHKPT_* */
} cr_checkpoint_args_t;

struct cr_rstrt_relocate_pair { const char *oldpath; const char *newpath; };
struct cr_rstrt_relocate { unsigned int count; struct cr_rstrt_relocate_pair path[]; };
#define CR_RSTRT_RELOCATE_SIZE(_cnt) \
    (sizeof(struct cr_rstrt_relocate) + (_cnt) * sizeof(struct cr_rstrt_relocate_pair))
#define CR_MAX_RSTRT_RELOC 16

typedef struct cr_restart_args {
    cr_version_t cr_version;
    int          cr_fd;
    int          cr_signal;
    unsigned int cr_flags;     /* CR_RSTRT_* */
    struct cr_rstrt_relocate *cr_relocate;
} cr_restart_args_t;

struct cr_checkpoint_info { int signal; const char *dest; pid_t requester; pid_t target; cr_scope_t scope; };
struct cr_restart_info { pid_t requester; const char *src; };

typedef enum {
    CR_HOOK_CONT_SIGNAL_CONTEXT = 0,
    CR_HOOK_CONT_THREAD_CONTEXT,
    CR_HOOK_CONT_NO_CALLBACKS,
    CR_HOOK_RSTRT_SIGNAL_CONTEXT,
    CR_HOOK_RSTRT_THREAD_CONTEXT,
    CR_HOOK_RSTRT_NO_CALLBACKS,
    CR_NUM_HOOKS
} cr_hook_event_t;
typedef void (*cr_hook_fn_t)(cr_hook_event_t);
#define CR_HOOK_FN_ERROR ((cr_hook_fn_t)(~0UL))

/* Callback contexts and ids */
#define CR_THREAD_CONTEXT 0x4000000
#define CR_SIGNAL_CONTEXT 0x2000000
#define CR_ID_CALLBACK    ((cr_client_id_t)-1)
#define CR_MAX_CALLBACKS  0x1FFFFFF

#define CR_SPINLOCK_INITIALIZER 0U

/* cr_checkpoint() flags */
#define CR_CHECKPOINT_READY        0
#define CR_CHECKPOINT_TEMP_FAILURE 1
#define CR_CHECKPOINT_PERM_FAILURE 2
#define CR_CHECKPOINT_OMIT         4
#define CR_CHECKPOINT_TEMP_FAILURE_CODE(v) (CR_CHECKPOINT_TEMP_FAILURE | ((v) << 16))
#define CR_CHECKPOINT_PERM_FAILURE_CODE(v) (CR_CHECKPOINT_PERM_FAILURE | ((v) << 16))
#define CR_CHECKPOINT_ABORT_MASK   7
#define _CR_CHECKPOINT_STUB        0x4000

/* cr_status() */
#define CR_STATE_IDLE    0
#define CR_STATE_PENDING 1
#define CR_STATE_ACTIVE  2

#define CR_DEST_CWD (-4096)

/* cr_checkpoint_args_t.cr_flags */
#define CR_CHKPT_PROHIBIT_SELF 0x00000001
#define CR_CHKPT_PTRACED_ALLOW 0x00000002
#define CR_CHKPT_PTRACED_SKIP  0x00000004
#define CR_CHKPT_PTRACER_SKIP  0x00000008
#define CR_CHKPT_ASYNC_ERR     0x00000010
#define CR_CHKPT_DUMP_EXEC     0x00000200
#define CR_CHKPT_DUMP_PRIVATE  0x00000400
#define CR_CHKPT_DUMP_SHARED   0x00000800
#define CR_CHKPT_DUMP_ALL      (CR_CHKPT_DUMP_EXEC | CR_CHKPT_DUMP_PRIVATE | CR_CHKPT_DUMP_SHARED)

/* cr_restart_args_t.cr_flags */
#define CR_RSTRT_ASYNC_ERR    0x00000001
#define CR_RSTRT_RESTORE_PID  0x00000002
#define CR_RSTRT_RESTORE_PGID 0x00000004
#define CR_RSTRT_RESTORE_SID  0x00000008

/* cr_hold_ctrl() */
#define CR_HOLD_READ  (-1)
#define CR_HOLD_NONE  0
#define CR_HOLD_CONT  1
#define CR_HOLD_RSTRT 2
#define CR_HOLD_BOTH  3
#define CR_HOLD_DFLT  4
#define CR_HOLD_SCOPE_THREAD 0
#define CR_HOLD_SCOPE_INIT   1
#define CR_HOLD_SCOPE_UNINIT 2

/* cr_poll_*() results */
#define CR_POLL_CHKPT_ERR_PRE  (-1)
#define CR_POLL_CHKPT_ERR_POST (-2)
#define CR_POLL_CHKPT_ERR_LOG  (-3)
#define CR_POLL_RSTRT_ERR_PRE  (-1)
#define CR_POLL_RSTRT_ERR_POST (-2)
#define CR_POLL_RSTRT_ERR_LOG  (-3)

extern cr_client_id_t cr_init(void);

extern int cri_init_checkpoint_args_t(cr_version_t, cr_checkpoint_args_t *);
#define cr_initialize_checkpoint_args_t(_p) cri_init_checkpoint_args_t(CR_CHECKPOINT_ARGS_VERSION, (_p))
extern int cr_request_checkpoint(cr_checkpoint_args_t *args, cr_checkpoint_handle_t *handle);
extern int cr_wait_checkpoint(cr_checkpoint_handle_t *handle, struct timeval *timeout);
extern int cr_log_checkpoint(cr_checkpoint_handle_t *handle, unsigned int len, char *msg);
extern int cr_reap_checkpoint(cr_checkpoint_handle_t *handle);
extern int cr_poll_checkpoint_msg(cr_checkpoint_handle_t *handle, struct timeval *timeout, char **msg_p);
extern int cr_poll_checkpoint(cr_checkpoint_handle_t *handle, struct timeval *timeout);
extern int cr_forward_checkpoint(cr_scope_t cr_scope, pid_t cr_target);

extern int cri_init_restart_args_t(cr_version_t, cr_restart_args_t *);
#define cr_initialize_restart_args_t(_p) cri_init_restart_args_t(CR_RESTART_ARGS_VERSION, (_p))
extern int cr_request_restart(cr_restart_args_t *args, cr_restart_handle_t *handle);
extern int cr_wait_restart(cr_restart_handle_t *handle, struct timeval *timeout);
extern int cr_log_restart(cr_restart_handle_t *handle, unsigned int len, char *msg);
extern int cr_reap_restart(cr_restart_handle_t *handle);
extern int cr_poll_restart_msg(cr_restart_handle_t *handle, struct timeval *timeout, char **msg_p);
extern int cr_poll_restart(cr_restart_handle_t *handle, struct timeval *timeout);

extern cr_callback_id_t cr_register_callback(cr_callback_t func, void *arg, int flags);
extern int cr_replace_callback(cr_callback_id_t id, cr_callback_t func, void *arg, int flags);
extern int cr_replace_self(cr_callback_t func, void *arg, int flags);
extern int cr_checkpoint(int flags);
extern const struct cr_checkpoint_info *cr_get_checkpoint_info(void);
extern const struct cr_restart_info *cr_get_restart_info(void);

extern int cr_enter_cs(cr_client_id_t id);
extern int cr_tryenter_cs(cr_client_id_t id);
extern int cr_leave_cs(cr_client_id_t id);
extern int cr_status(void);

extern cr_hook_fn_t cr_register_hook(cr_hook_event_t event, cr_hook_fn_t hook_fn);
extern int cr_hold_ctrl(int scope, int flags);
extern int cr_inc_persist(void);
extern int cr_dec_persist(void);

extern void cr_spinlock_init(cr_spinlock_t *);
extern void cr_spinlock_lock(cr_spinlock_t *);
extern void cr_spinlock_unlock(cr_spinlock_t *);
extern int cr_spinlock_trylock(cr_spinlock_t *);

extern const char *cr_strerror(int errnum);

extern void cr_request(void) _CR_DEPRECATED;
extern void cr_request_file(const char *filename) _CR_DEPRECATED;
extern void cr_request_fd(int fd) _CR_DEPRECATED;

extern int cr_link_me;
extern const int cri_signum;

#ifdef __cplusplus
}
#endif

#endif
