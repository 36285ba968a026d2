import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab._atomic import write_bytes_atomic, write_tensors_atomic

WRITER = """
import sys, torch
from transferlab._atomic import write_tensors_atomic
path, i = sys.argv[1], 0
while True:
    i += 1
    write_tensors_atomic(path, {"w": torch.full((512, 512), float(i))}, {"i": str(i)})
    print(i, flush=True)
"""


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_bytes_atomic(target, None)  # type: ignore[arg-type]  # fails inside the write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    """A writer rewriting a 1 MiB safetensors file in a loop is killed with SIGKILL at varied moments."""
    target = tmp_path / "checkpoint.safetensors"
    for delay in (0.3, 0.45, 0.6, 0.75):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        writer.stdout.readline()  # at least one complete write happened
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        tensors = load_file(target)
        value = tensors["w"][0, 0].item()
        assert torch.equal(tensors["w"], torch.full((512, 512), value))
    write_tensors_atomic(target, {"w": torch.zeros(1)})
    assert load_file(target)["w"].item() == 0
