/* loader.c: kernel plugins through dlopen, and descriptor helpers. */
#include <dlfcn.h>
#include <stddef.h>
#include "usp/kernel.h"

usp_status usp_kernel_validate(const usp_kernel *k, const char *origin) {
    if (!k) return usp_fail(USP_EINVAL, "%s: %s() returned NULL", origin, USP_KERNEL_ENTRY_SYMBOL);
    if (k->abi_version < USP_KERNEL_ABI_MIN || k->abi_version > USP_KERNEL_ABI_VERSION)
        return usp_fail(USP_EINVAL, "%s: kernel ABI version %u, this usp takes versions %u to %u (rebuild it against this include/usp/kernel.h)",
                        origin, k->abi_version, USP_KERNEL_ABI_MIN, USP_KERNEL_ABI_VERSION);
    if (k->size < sizeof(usp_kernel))
        return usp_fail(USP_EINVAL, "%s: usp_kernel struct is %u bytes, this usp expects %zu (built against another kernel.h)",
                        origin, k->size, sizeof(usp_kernel));
    const struct { const char *name; int missing; } fns[] = {
        {"forward", k->forward == NULL},
        {"bwd_prep", k->bwd_prep == NULL},
        {"backward", k->backward == NULL},
        {"merge", k->merge == NULL},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; ++i)
        if (fns[i].missing) return usp_fail(USP_EINVAL, "%s: function %s is NULL", origin, fns[i].name);
    if (k->dtypes == 0) return usp_fail(USP_EINVAL, "%s: takes no input dtype (dtypes = 0)", origin);
    return USP_OK;
}

int usp_kernel_takes_masks(const usp_kernel *k) { return k && k->abi_version >= 2; }

const char *usp_kernel_mask_refusal(const usp_kernel *k) {
    if (usp_kernel_takes_masks(k)) return NULL;
    return "plugin has ABI v1, no masks";
}

usp_status usp_kernel_load(const char *path, const usp_kernel **out, void **handle) {
    *out = NULL;
    *handle = NULL;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return usp_fail(USP_EINVAL, "cannot load %s: %s", path, dlerror());
    /* object -> function pointer through a union: ISO C has no direct cast */
    union { void *obj; usp_kernel_entry_fn fn; } entry;
    entry.obj = dlsym(h, USP_KERNEL_ENTRY_SYMBOL);
    if (!entry.obj) {
        dlclose(h);
        return usp_fail(USP_EINVAL, "%s: no symbol %s (a plugin exports `const usp_kernel *%s(void)`)", path,
                        USP_KERNEL_ENTRY_SYMBOL, USP_KERNEL_ENTRY_SYMBOL);
    }
    const usp_kernel *k = entry.fn();
    usp_status s = usp_kernel_validate(k, path);
    if (s != USP_OK) {
        dlclose(h);
        return s;
    }
    *out = k;
    *handle = h;
    return USP_OK;
}

void usp_kernel_unload(void *handle) {
    if (handle) dlclose(handle);
}

usp_ktensor usp_ktensor_bshd(void *ptr, usp_dtype dt, int b, int l, int h, int d) {
    usp_ktensor t;
    t.ptr = ptr;
    t.dtype = dt;
    t.b = b;
    t.l = l;
    t.h = h;
    t.d = d;
    t.sh = d;
    t.sl = (int64_t)h * d;
    t.sb = (int64_t)l * h * d;
    return t;
}

usp_kstats usp_kstats_bhl(float *ptr, int b, int h, int l) {
    usp_kstats s;
    s.ptr = ptr;
    s.b = b;
    s.h = h;
    s.l = l;
    s.sh = l;
    s.sb = (int64_t)h * l;
    return s;
}
