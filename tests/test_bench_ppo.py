"""bench_ppo's FLOP count and roofline (issue 17): the phases' work adds up to the iteration's."""

import pytest
import transformers as hf

from benchmarks.bench_ppo import CASES, iteration_flops, roofline, roofline_work


@pytest.mark.parametrize("policy_pass", [False, True])
def test_the_roofline_phases_sum_to_the_iteration_flops(policy_pass):
    lm = hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=300, n_positions=128, n_embd=32, n_layer=2, n_head=2))
    c = CASES["embedded"]
    work = roofline_work(lm, c, policy_pass)
    s = work["sample"]
    phases = s["prefill_flops"] + sum(st["flops"] for st in s["decode_steps"])
    phases += sum(work[k]["flops"] for k in ("score", "reference", "policy_forward", "update"))
    assert phases == pytest.approx(iteration_flops(lm, c, policy_pass), rel=1e-12)
    # the policy's second pass (old_logprobs = "recompute") is one more forward over the batch
    assert (work["policy_forward"]["flops"] > 0) == policy_pass
    if policy_pass:
        assert work["policy_forward"]["flops"] == work["reference"]["flops"]
    bound = roofline(work, 1e11, 1e10)
    assert bound["policy_forward"] == work["policy_forward"]["flops"] / 1e11
    assert all(v >= 0 for v in bound.values())
