"""The bf16-on-a-CPU-that-emulates-it warning, from hand-written /proc/cpuinfo texts."""

from halluc_cl.lm.precision import cpu_has_bf16, slow_bf16_warning

AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_flags_tell_bf16_cpus_apart():
    assert cpu_has_bf16(AVX2) is False
    assert cpu_has_bf16(AMX) is True
    assert cpu_has_bf16(ARM) is True
    assert cpu_has_bf16("model name\t: bf16 in a name is not a flag\n") is False


def test_warning_only_for_bf16_on_a_cpu_without_it():
    message = slow_bf16_warning("bf16-mixed", "cpu", AVX2)
    assert message and "--trainer.precision 32-true" in message
    assert slow_bf16_warning("bf16-true", "cpu", AVX2)
    assert slow_bf16_warning("bf16-mixed", "cpu", AMX) is None
    assert slow_bf16_warning("32-true", "cpu", AVX2) is None
    assert slow_bf16_warning("bf16-mixed", "cuda", AVX2) is None
