"""examples/train_gpt.py end to end (ctest label python). Usage:
    test_train_gpt.py TRAIN_GPT MPIEXEC [MPIEXEC_FLAGS...]

Proves, with real ranks, real swap files and Debian's torch:
  1. the losses of N steps with the Adam state on NVMe are bit-identical to the same
     script with the state in memory, at 1 and 2 ranks;
  2. a 2-rank run killed (SIGKILL of rank 0) at a random step and resumed from its last
     commit ends with parameters bit-identical to an uninterrupted run;
  3. the state a 2-rank run committed, restored by a 1-rank run (the global batch kept the
     same), is equal tensor by tensor and bit for bit once assembled, and training then
     continues with losses within 1e-4 (relative) of the uninterrupted 2-rank run: another
     reduction order changes the rounding, nothing more.
The kill step is random (printed; SWAPCOORD_TEST_KILL_STEP fixes it)."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import torch

train_gpt, mpiexec, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
python = sys.executable
work = tempfile.mkdtemp(prefix="swapcoord-train-gpt-", dir="/var/tmp")
failures = []
STEPS = 12
COMMON = ["--steps", str(STEPS), "--layers", "2", "--d-model", "64", "--heads", "4", "--seq", "32", "--batch", "8",
          "--group-numel", "16384"]


def run(name, np, *args, expect=0):
    """Runs train_gpt.py under mpiexec; returns its JSON (None when it was killed)."""
    out = os.path.join(work, f"{name}.json")
    cmd = [mpiexec, "-n", str(np), *flags, python, train_gpt, *COMMON, "--json", out, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    log = os.path.join(work, f"{name}.log")
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n" + result.stdout + result.stderr)
    if (result.returncode == 0) != (expect == 0):
        print(result.stdout[-3000:], result.stderr[-3000:])
        raise SystemExit(f"FAIL: {name}: exit {result.returncode} (expected {'0' if expect == 0 else 'non-zero'})")
    print(f"ran {name}: np {np}, exit {result.returncode}")
    if expect != 0:
        return None
    with open(out) as f:
        return json.load(f)


def check(condition, what):
    print(("ok:   " if condition else "FAIL: ") + what)
    if not condition:
        failures.append(what)


def losses(record, first=1):
    return {s["step"]: s["loss_hex"] for s in record["steps"] if s["step"] >= first}


def swap_dir(name):
    return ["--offload", "nvme", "--swap-dir", os.path.join(work, name), "--job", name]


try:
    # 1. Offload against in memory, at 1 and 2 ranks: every loss, bit for bit.
    for np in (1, 2):
        memory = run(f"memory-np{np}", np, "--offload", "none")
        nvme = run(f"nvme-np{np}", np, *swap_dir(f"nvme-np{np}"), "--commit-every", "4")
        check(losses(memory) == losses(nvme) and len(losses(nvme)) == STEPS,
              f"np {np}: {STEPS} losses with the state on NVMe are bit-identical to in memory")
        check(memory["final_param_sha256"] == nvme["final_param_sha256"],
              f"np {np}: final parameters bit-identical (sha256 {nvme['final_param_sha256'][:16]}...)")
        check(sum(s["swap_in_bytes"] for s in nvme["steps"]) > 0, f"np {np}: the state was really swapped")
        if np == 2:
            uninterrupted = nvme

    # 2. SIGKILL at a random step, resume from the last commit (every 3 steps).
    kill = int(os.environ.get("SWAPCOORD_TEST_KILL_STEP", random.Random().randint(4, STEPS - 1)))
    print(f"kill step: {kill} (SWAPCOORD_TEST_KILL_STEP={kill} repeats this run)")
    run("killed", 2, *swap_dir("crash"), "--commit-every", "3", "--kill-at-step", str(kill), expect="killed")
    resumed = run("resumed", 2, *swap_dir("crash"), "--commit-every", "3", "--resume")
    check(resumed["resumed_from_step"] == kill // 3 * 3, f"resumed from step {kill // 3 * 3}, the last commit "
          f"before the kill at {kill} (got {resumed['resumed_from_step']})")
    check(resumed["final_param_sha256"] == uninterrupted["final_param_sha256"],
          "killed and resumed: final parameters bit-identical to the uninterrupted run")
    check(losses(resumed) == losses(uninterrupted, resumed["resumed_from_step"] + 1),
          "killed and resumed: the steps after the resume have the uninterrupted run's losses, bit for bit")

    # 3. Resume at another rank count: 2 ranks commit at step 8, 1 rank continues to 12.
    dump2, dump1 = os.path.join(work, "dump-np2"), os.path.join(work, "dump-np1")
    run("two-ranks", 2, *swap_dir("elastic"), "--commit-every", "8", "--steps", "8", "--state-dump", dump2)
    one = run("one-rank", 1, *swap_dir("elastic"), "--resume", "--state-dump", dump1)
    check(one["resumed_from_step"] == 8, "the 1-rank run resumed from step 8")
    before = [torch.load(os.path.join(dump2, f"rank-{r}.pt")) for r in range(2)]
    after = torch.load(os.path.join(dump1, "rank-0.pt"))
    numels = before[0]["group_numels"]
    same = after["group_numels"] == numels and after["step"] == before[0]["step"] == before[1]["step"] == 8
    compared = 0
    for k, n in enumerate(numels):
        for key in ("exp_avg", "exp_avg_sq", "master"):
            whole = torch.empty(n)
            covered = 0
            for d in before:
                if k in d[key]:
                    offset, count = d["ranges"][k]
                    whole[offset:offset + count] = d[key][k]
                    covered += count
            restored = after[key][k]
            same &= covered == n and after["ranges"][k] == (0, n) and torch.equal(
                whole.view(torch.int32), restored.view(torch.int32))
            compared += 1
    check(same, f"2 -> 1 ranks: the restored optimizer state equals the committed one bit for bit "
          f"({compared} tensors: exp_avg, exp_avg_sq, master of {len(numels)} groups; step 8)")
    reference = losses(uninterrupted, 9)
    got = {s["step"]: s["loss"] for s in one["steps"]}
    want = {s["step"]: s["loss"] for s in uninterrupted["steps"] if s["step"] >= 9}
    worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in want)
    check(sorted(got) == sorted(want) and worst < 1e-4,
          f"2 -> 1 ranks: steps 9..{STEPS} continue within 1e-4 of the 2-rank run (worst relative difference "
          f"{worst:.2e}; bit-identical steps: {sum(losses(one)[s] == reference[s] for s in reference)} of "
          f"{len(reference)})")
finally:
    if failures:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work)
print("FAIL" if failures else "PASS", f"({len(failures)} failed)" if failures else "")
raise SystemExit(1 if failures else 0)
