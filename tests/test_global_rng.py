"""No library code touches the global RNGs: building and stepping an agent, a reward model, sampling with
generate and the demo's steps leave torch's and numpy's global state exactly as they were."""

import numpy as np
import torch

from agents.build import build_agent
from agents.config import load_config


def test_building_and_training_leave_the_global_rngs_alone(tmp_path):
    from rewards.model import RewardModel
    from textenv.models import load_causal_lm
    from textenv.models.sampling import sample_responses

    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 (the legacy global state is what must stay untouched)
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    for algo in ("ppo", "rloo", "grpo"):
        cfg = load_config("tiny_toy", [f"--algo={algo}", f"--run.out_dir={tmp_path}", "--grpo.batch_size=8"])
        build_agent(cfg).step()
    lm, tok = load_causal_lm("tiny-gpt2", seed=0)
    sample_responses(lm, np.array([[1, 2, 3]]), tok.pad_token_id, 4, 1.0, seed=5)
    RewardModel.from_spec("tiny-gpt2", seed=1)
    build_agent(load_config("tiny_toy", ["--policy.train=lora", f"--run.out_dir={tmp_path}"]))  # peft init
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
