/* bad_abi_plugin.c: a plugin built for another ABI version.
 *
 * kernel-check and the tests load it to show that usp refuses a struct whose
 * abi_version is not the one usp was built with, before calling anything. */
#include "usp/kernel.h"

static const usp_kernel bad_kernel = {
    USP_KERNEL_ABI_VERSION + 1,
    sizeof(usp_kernel),
    "bad-abi (built for a future ABI)",
    1u << USP_BF16,
    0, 0, 0, 0,
};

__attribute__((visibility("default"))) const usp_kernel *usp_kernel_entry(void) {
    return &bad_kernel;
}
