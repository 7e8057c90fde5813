/* OpenBLAS's kernel choice on CPUs it does not know.
 *
 * Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels by CPU
 * model number.  On a model newer than it knows (an Emerald Rapids Xeon,
 * family 6 model 207, for one) it falls back to "Prescott", its SSE3
 * kernels, and our GEMMs run ~3x slower (baseline lenet5 training: 62.8 s
 * against 22.2 s with the SkylakeX kernels, same machine).  OpenBLAS reads
 * OPENBLAS_CORETYPE once, when the library loads, so the only way to change
 * the choice is to start again: when the variable is unset, the library says
 * Prescott and the CPU has AVX2 or AVX-512, gpp-worker sets it and executes
 * itself once more (same pid, same arguments, same descriptors).  A value
 * the user set, whatever it is, is kept. */
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gpp/nn.h"

/* nn_blas_core_pick: see gpp/nn.h. */
const char *nn_blas_core_pick(const char *corename, const char *env_coretype,
                              unsigned features)
{
    if (env_coretype && env_coretype[0]) return NULL;   /* the user's choice */
    if (!corename || strcasecmp(corename, "Prescott") != 0) return NULL;
    if (features & NN_CPU_AVX512) return "SkylakeX";
    if (features & NN_CPU_AVX2) return "Haswell";
    if (features & NN_CPU_AVX) return "SandyBridge";
    return NULL;   /* an SSE3 machine: Prescott is right */
}

/* nn_cpu_features: see gpp/nn.h. */
unsigned nn_cpu_features(void)
{
    unsigned f = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx")) f |= NN_CPU_AVX;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= NN_CPU_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        f |= NN_CPU_AVX512;
#endif
    return f;
}

/* nn_blas_core: see gpp/nn.h. */
const char *nn_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

/* nn_blas_core_fix: see gpp/nn.h. */
void nn_blas_core_fix(char **argv)
{
    const char *pick =
        nn_blas_core_pick(openblas_get_corename(), getenv("OPENBLAS_CORETYPE"), nn_cpu_features());
    if (!pick) return;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1) return;   /* keep going, slower */
    self[n] = '\0';
    if (setenv("OPENBLAS_CORETYPE", pick, 1) != 0) return;
    fflush(NULL);
    execv(self, argv);
    /* exec failed: carry on with the kernels we have, and say so once */
    int e = errno;
    unsetenv("OPENBLAS_CORETYPE");
    fprintf(stderr, "gpp-worker: OpenBLAS runs its generic kernels here; restarting with "
                    "OPENBLAS_CORETYPE=%s failed (%s)\n", pick, strerror(e));
}
