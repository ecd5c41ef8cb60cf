"""The cost of an attack: passes counted by hooks on the attacked network, peak memory, and both logged per run.

Definition under test: a "pass" is one sample pushed through the attacked network inside the attack call, forward
or backward (a vmapped VJP over C cotangents is C backward passes); judging the returned images is not counted.
"""

import math

import mlflow
import pytest
import torch
from torch import nn

from mlattack.attacks import BIM, FGSM, PGD
from mlattack.attacks.jacobian import label_jacobian
from mlattack.evaluation.cost import measure_cost
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.rundir.records import read_records
from tests.evaluation.toy import C, LinearColourNet


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, C))


CPU = torch.device("cpu")


def test_fgsm_costs_one_forward_and_one_backward_per_sample() -> None:
    net, x = small_cnn(), torch.rand(6, 3, 8, 8)
    with measure_cost(net, CPU) as cost:
        FGSM(eps=0.1).run(net, x, torch.ones(6, C), diagnostics=False)
    assert (cost.forwards, cost.backwards) == (6, 6)
    # asked for diagnostics, the attack evaluates its final images once more (forward only)
    with measure_cost(net, CPU) as cost:
        FGSM(eps=0.1).run(net, x, torch.ones(6, C))
    assert (cost.forwards, cost.backwards) == (12, 6)


def test_iterative_attacks_cost_one_forward_and_backward_per_step_and_early_stop_is_counted_as_run() -> None:
    net, x = small_cnn(), torch.rand(4, 3, 8, 8)
    with measure_cost(net, CPU) as cost:
        PGD(eps=0.1, nb_iter=7, eps_iter=0.01).run(net, x, torch.ones(4, C), diagnostics=False)
    assert (cost.forwards, cost.backwards) == (28, 28)
    # on the linear toy, red's labels are reached within a few steps: early stop drops samples from the batch,
    # and the hooks count what really ran, not nb_iter x N
    toy = LinearColourNet()
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))[:, :, None, None].expand(4, 3, 8, 8)
    red = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]]).expand(4, C)
    with measure_cost(toy, CPU) as cost:
        res = BIM(eps=1.0, nb_iter=50, eps_iter=0.1, early_stop=True).run(toy, x, red, diagnostics=False)
    steps = int(res.iterations.sum())
    assert bool(res.reached.all()) and steps < 4 * 50
    # each sample's last pass sees its success (its gradient is taken before the check, and counted)
    assert cost.forwards == cost.backwards == steps + 4


def test_a_vmapped_jacobian_counts_one_backward_pass_per_label() -> None:
    net, x = small_cnn(), torch.rand(3, 3, 8, 8)
    with measure_cost(net, CPU) as cost:
        label_jacobian(net, x)
    assert (cost.forwards, cost.backwards) == (3, 3 * C)


def test_hooks_are_removed_and_work_outside_is_not_counted() -> None:
    net, x = small_cnn(), torch.rand(2, 3, 8, 8)
    with measure_cost(net, CPU) as cost:
        net(x)
    net(x).sum()  # after the block: not counted
    assert (cost.forwards, cost.backwards) == (2, 0)  # no gradient asked: no backward pass
    with pytest.raises(RuntimeError), measure_cost(net, CPU) as failed:
        net(x)
        raise RuntimeError("attack blew up")
    net(x)
    assert failed.forwards == 2


@pytest.mark.skipif(not torch.cuda.is_available() and not __import__("os").path.exists("/proc/self/clear_refs"),
                    reason="peak memory is measured on CUDA or Linux only")  # fmt: skip
def test_peak_memory_sees_a_tensor_allocated_and_freed_inside() -> None:
    net = small_cnn()
    with measure_cost(net, CPU) as small:
        net(torch.rand(1, 3, 8, 8))
    with measure_cost(net, CPU) as big:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, then freed before the block ends
        del block
    assert 60 * 2**20 <= big.peak_bytes < 200 * 2**20
    assert small.peak_bytes < 32 * 2**20


def test_attack_runs_log_their_cost(tmp_path, store, toy_data, registered_toy_model) -> None:
    specs = [
        AttackSpec(attack=FGSM(eps=0.3)),
        AttackSpec(attack=BIM(eps=0.2, nb_iter=5, eps_iter=0.05), num_samples=5),
    ]
    report = run_attacks(
        registered_toy_model, toy_data, specs, num_samples=8, output_dir=str(tmp_path / "out"), batch_size=4,
        quantize="none", panel_samples=0, progress_bar=False, accelerator="cpu",
    )  # fmt: skip
    client = mlflow.MlflowClient(store)
    logged = {name: client.get_run(rid).data.metrics for name, rid in report.child_run_ids.items()}
    # paper mode, no early stop: FGSM is one gradient step, BIM five; judging is outside the count
    assert logged["FGSM"]["cost/forward_passes_per_sample"] == 1.0
    assert logged["FGSM"]["cost/backward_passes_per_sample"] == 1.0
    assert logged["BIM"]["cost/forward_passes_per_sample"] == 5.0
    assert logged["BIM"]["cost/backward_passes_per_sample"] == 5.0
    for metrics in logged.values():
        assert metrics["time/seconds_per_sample"] > 0
        if "cost/peak_memory_mb" in metrics:  # measured where the platform allows (CUDA, Linux)
            assert 0 <= metrics["cost/peak_memory_mb"] < 1024
    # the per-sample records carry the cost, so a resumed run reports the same numbers
    (records_file,) = (tmp_path / "out").glob("*/BIM.jsonl")
    records, damaged = read_records(records_file)
    assert damaged == 0 and [r["backwards"] for r in records] == [5.0] * 5
    assert all(math.isfinite(r["forwards"]) for r in records)
