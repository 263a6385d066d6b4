"""The stderr filter of the commands: TensorFlow's native start-up lines go, everything else stays."""

from iql_tf import quiet

NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796172843.566299    4865 port.cc:153] oneDNN custom operations are on. You may see slightly",
    b"I0000 00:00:1796172843.566702    4865 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    b"W0000 00:00:1796172864.805226    4865 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    b"W0000 00:00:1796172864.805321    4865 tf_tfl_flatbuffer_helpers.cc:367] Ignored drop_control_dependency.",
    b"W1202 00:54:08.206245 140315405073280 font_manager.py:1639] Matplotlib is building the font cache; this may "
    b"take a moment.",
    b"I1202 01:18:45.478739 139680851643264 font_manager.py:1848] generated new fontManager",
]
CU_INIT = (b"E0000 00:00:1796172845.255640    4865 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
           b"Failed call to cuInit: UNKNOWN ERROR (303)")
KEPT = [
    b"I1202 00:54:08.206245 140315405073280 train.py:63] run directory: /tmp/r1",  # the project's own INFO line
    b"W0000 00:00:1796172864.805226    4865 op_kernel.cc:1857] OP_REQUIRES failed at save_restore_v2_ops.cc:114",
    b"E0000 00:00:1796172845.255640    4865 some_kernel.cc:12] a real error",
    b"error: gin file 'nope' not found",
    b"  50%|#####     | 1000/2000 [00:03<00:03, 294.00step/s]",
]


def test_the_filter_drops_the_start_up_lines_and_keeps_the_rest():
    assert [line for line in NOISE if not quiet._dropped(line + b"\n", gpu_present=False)] == []
    assert [line for line in KEPT if quiet._dropped(line + b"\n", gpu_present=False)] == []
    # cuInit failing is noise on a machine without a GPU, and a real error on one with a GPU.
    assert quiet._dropped(CU_INIT, gpu_present=False) and not quiet._dropped(CU_INIT, gpu_present=True)
