"""The exported policy: TensorFlow alone loads it; it takes raw observations and returns actions in the
environment's units (normalisation and bounds inside); TFLite computes the same, and so does the ONNX model in
onnxruntime alone; replacement is atomic."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from iql_tf import evaluation, files
from iql_tf.agent import IQLAgent
from iql_tf.data import rewards
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.errors import UserError
from iql_tf.generation import generators
from iql_tf.policy import checks, loading
from iql_tf.policy.exported import export_policy
from iql_tf.policy.metadata import METADATA_PATH, ONNX_FILE, TFLITE_FILE, PolicyMetadata, read_policy_metadata
from iql_tf.settings import AgentSettings

# Run in a fresh interpreter in which the project and every library but TensorFlow fail to import.
DEPLOYMENT_SCRIPT = textwrap.dedent("""
    import json, sys
    BLOCKED = {"iql_tf", "tensorflow_probability", "keras", "tf_keras", "gin", "gymnasium", "minari"}
    for name in BLOCKED:
        sys.modules[name] = None  # `import name` now fails as if it were not installed

    import numpy as np
    import tensorflow as tf

    export_dir, observations_file, out_file = sys.argv[1:]
    policy = tf.saved_model.load(export_dir)
    observations = tf.constant(np.load(observations_file))
    actions = policy.signatures["serving_default"](observations=observations)["actions"].numpy()
    sampled = policy.signatures["sample"](observations=observations, temperature=tf.constant(1.0),
                                          seed=tf.constant([1, 2]))["actions"].numpy()
    cold = policy.sample(observations, tf.constant(0.0), tf.constant([3, 4]))["actions"].numpy()
    interpreter = tf.lite.Interpreter(model_path=f"{export_dir}/policy.tflite")
    runner = interpreter.get_signature_runner("serving_default")
    lite = runner(observations=observations.numpy())["actions"]
    loaded = sorted(name for name, module in sys.modules.items() if module is not None and name.split(".")[0] in BLOCKED)
    np.savez(out_file, actions=actions, sampled=sampled, cold=cold, lite=lite)
    print(json.dumps(loaded))
""")

# The ONNX model in a fresh interpreter in which TensorFlow and the project fail to import: onnxruntime alone.
ONNX_SCRIPT = textwrap.dedent("""
    import json, sys
    BLOCKED = {"iql_tf", "tensorflow", "keras", "tf2onnx", "gin"}
    for name in BLOCKED:
        sys.modules[name] = None

    import numpy as np
    import onnxruntime

    model_file, observations_file, out_file = sys.argv[1:]
    session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    actions = session.run(["actions"], {"observations": np.load(observations_file)})[0]
    loaded = sorted(name for name, module in sys.modules.items() if module is not None and name.split(".")[0] in BLOCKED)
    np.save(out_file, actions)
    print(json.dumps(loaded))
""")

OBS, ACT = 11, 3
LOW, HIGH = np.array([-2.0, -1.0, 0.0], np.float32), np.array([2.0, 1.0, 10.0], np.float32)


def make_agent(seeds=(0,), **settings):
    agent = IQLAgent(OBS, ACT, AgentSettings(hidden_dims=(16, 16), jit_compile=False, **settings), actor_decay_steps=10,
                     seeds=seeds)
    bias = agent.actor.mean_head.bias
    bias.assign(np.broadcast_to(np.float32([2.0, -2.0, 0.0]), bias.shape))  # some actions near the bounds
    return agent


def metadata(**fields):
    defaults = dict(env_id="Toy-v0", env_kwargs={}, max_episode_steps=10, observation_keys=None, observation_dim=OBS,
                    action_dim=ACT, action_low=LOW.tolist(), action_high=HIGH.tolist(), observation_normalization=None,
                    ref_min_score=None, ref_max_score=None, dataset="toy", dataset_checksum="0", seed=0, step=7,
                    evaluation={}, gin_config="")
    return PolicyMetadata(**{**defaults, **fields})


def preprocessing(observations, normalize):
    return Preprocessing.fit(observations, LOW, HIGH, rewards.RewardTransform("none"), normalize)


def agent_actions(agent, member, prep, raw_observations):
    """What the trainer's evaluation does: normalise, act, rescale to the environment's units."""
    prepared = prep.observations(raw_observations)
    unit = agent.act(np.broadcast_to(prepared, (agent.members, *prepared.shape))).numpy()[member]
    return prep.actions_from_unit(np.clip(unit, -1, 1))


@pytest.fixture(scope="module")
def raw_observations(hopper_rows):
    return hopper_rows["observations"][:64]


def test_export_loads_with_tensorflow_alone_and_matches_the_agent_on_raw_observations(tmp_path, raw_observations):
    agent = make_agent(seeds=(0, 1))
    prep = preprocessing(raw_observations, normalize=True)
    export_dir = tmp_path / "export" / "policy"
    export_policy(agent.member_weights(1), "relu", prep, export_dir, metadata(seed=1))
    np.save(tmp_path / "observations.npy", raw_observations)
    (tmp_path / "deploy.py").write_text(DEPLOYMENT_SCRIPT)

    result = subprocess.run(
        [sys.executable, str(tmp_path / "deploy.py"), str(export_dir), str(tmp_path / "observations.npy"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []  # nothing blocked was imported
    out = np.load(tmp_path / "out.npz")
    expected = agent_actions(agent, 1, prep, raw_observations)
    np.testing.assert_allclose(out["actions"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["lite"], out["actions"], rtol=1e-5, atol=1e-5)  # TFLite computes the same
    assert not np.allclose(out["actions"], agent_actions(agent, 0, prep, raw_observations))  # seed 1's policy
    np.testing.assert_allclose(out["cold"], out["actions"], rtol=1e-5, atol=1e-6)
    assert out["sampled"].shape == (64, 3)
    assert np.all(out["sampled"] >= LOW) and np.all(out["sampled"] <= HIGH)
    assert np.any(out["sampled"] == HIGH) or np.any(out["sampled"] == LOW)  # clipped to the bounds
    assert not np.allclose(out["sampled"], out["actions"])
    assert read_policy_metadata(export_dir) == metadata(seed=1)
    fields = json.loads((export_dir / METADATA_PATH).read_text())  # a policy of vectors, as before images
    assert fields["format_version"] == 2 and "image_shape" not in fields and "frame_stack" not in fields

    (tmp_path / "deploy_onnx.py").write_text(ONNX_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "deploy_onnx.py"), str(export_dir / ONNX_FILE), str(tmp_path / "observations.npy"),
         str(tmp_path / "onnx.npy")], capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []  # neither TensorFlow nor iql_tf was imported
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), out["actions"], rtol=1e-5, atol=1e-5)


def test_a_linear_mean_is_exported_and_clipped_to_the_bounds_as_evaluation_clips_it(tmp_path, raw_observations):
    agent = make_agent(tanh_mean=False)  # OGBench's IQL: the mean Dense(h), clipped where actions are taken
    prep = preprocessing(raw_observations, normalize=False)
    export_policy(agent.member_weights(0), "relu", prep, tmp_path / "policy", metadata(), tanh_mean=False)
    served = tf.saved_model.load(str(tmp_path / "policy")).signatures["serving_default"]
    actions = served(observations=tf.constant(raw_observations, tf.float32))["actions"].numpy()
    np.testing.assert_allclose(actions, agent_actions(agent, 0, prep, raw_observations), rtol=1e-5, atol=1e-5)
    # Means around +-2 (the biases), clipped to the bounds; tanh'd means would never reach them.
    assert np.mean(actions[:, 0] == HIGH[0]) > 0.5 and np.mean(actions[:, 1] == LOW[1]) > 0.5
    sample = tf.saved_model.load(str(tmp_path / "policy")).signatures["sample"]
    sampled = sample(observations=tf.constant(raw_observations, tf.float32), temperature=tf.constant(5.0),
                     seed=tf.constant([1, 2]))["actions"].numpy()
    assert np.all(sampled >= LOW) and np.all(sampled <= HIGH)
    assert not np.any(agent_actions(make_agent(), 0, prep, raw_observations)[:, 0] == HIGH[0])


def test_the_tflite_model_has_no_variables_left_to_read(tmp_path, raw_observations):
    # With weights as variables, XNNPACK gives NaN and the plain interpreter fails in READ_VARIABLE.
    prep = preprocessing(raw_observations, normalize=False)
    export_policy(make_agent().member_weights(0), "relu", prep, tmp_path / "policy", metadata())
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "policy" / TFLITE_FILE))
    operators = {detail["op_name"] for detail in interpreter._get_ops_details()}
    assert not operators & {"READ_VARIABLE", "VAR_HANDLE", "ASSIGN_VARIABLE"}
    runner = interpreter.get_signature_runner("serving_default")
    actions = runner(observations=raw_observations[:1])["actions"]
    assert np.all(np.isfinite(actions)) and actions.shape == (1, 3)


def test_sample_signature_is_reproducible_for_a_seed(tmp_path, raw_observations):
    prep = preprocessing(raw_observations, normalize=False)
    export_policy(make_agent().member_weights(0), "relu", prep, tmp_path / "policy", metadata())
    policy = tf.saved_model.load(str(tmp_path / "policy"))
    observations = tf.constant(raw_observations[:4])
    first = policy.sample(observations, tf.constant(1.0), tf.constant([5, 6]))["actions"]
    again = policy.sample(observations, tf.constant(1.0), tf.constant([5, 6]))["actions"]
    other = policy.sample(observations, tf.constant(1.0), tf.constant([7, 8]))["actions"]
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())


def test_export_replaces_an_earlier_one_in_one_step_and_leaves_no_staging_folders(tmp_path, raw_observations,
                                                                                  monkeypatch):
    directory = tmp_path / "export" / "policy"
    prep = preprocessing(raw_observations, normalize=False)
    weights = make_agent().member_weights(0)
    export_policy(weights, "relu", prep, directory, metadata(step=1))
    seen = []
    exchange = files._exchange

    def watched(first, second):  # the old export is complete until the instant the new one is
        seen.append(read_policy_metadata(second).step)
        exchange(first, second)
        seen.append(read_policy_metadata(second).step)

    monkeypatch.setattr(files, "_exchange", watched)
    export_policy(weights, "relu", prep, directory, metadata(step=2))
    assert seen == [1, 2]
    assert read_policy_metadata(directory).step == 2
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["policy"]
    assert (directory / METADATA_PATH).is_file() and (directory / TFLITE_FILE).is_file()


@pytest.mark.parametrize("activation", ["relu", "elu", "tanh", "gelu", "gelu_tanh", "selu", "swish",
                                        "leaky_relu", "softsign"])
def test_a_fresh_export_runs_only_allowed_ops_and_its_onnx_model_computes_what_it_serves(tmp_path, raw_observations,
                                                                                        activation):
    import onnxruntime

    agent = IQLAgent(OBS, ACT, AgentSettings(hidden_dims=(4,), activation=activation, jit_compile=False), 10)
    # Raw observations around the data's, scaled up so that every activation sees its negative and positive range.
    observations = (raw_observations[:1] + 3 * raw_observations.std(0)
                    * np.random.default_rng(0).standard_normal((256, OBS))).astype(np.float32)
    for normalize in (True, False):  # with the tanh mean, and without (OGBench's linear mean)
        directory = tmp_path / f"policy-{normalize}"
        export_policy(agent.member_weights(0), activation, preprocessing(raw_observations, normalize), directory,
                      metadata(), tanh_mean=normalize)
        served = tf.saved_model.load(str(directory)).signatures["serving_default"]
        expected = served(observations=tf.constant(observations))["actions"].numpy()
        session = onnxruntime.InferenceSession(str(directory / ONNX_FILE), providers=["CPUExecutionProvider"])
        # float32 MLPs of 4 units evaluated by two runtimes: a few ulps apart, actions up to 10 in size.
        np.testing.assert_allclose(session.run(["actions"], {"observations": observations})[0], expected,
                                   rtol=1e-5, atol=1e-5)
    served = checks.served_ops(tmp_path / "policy-True") | checks.served_ops(tmp_path / "policy-False")
    assert {"MatMul", "StatelessRandomNormalV2"} <= served  # the policy and its sampling were reached
    assert served <= checks.ALLOWED_OPS, sorted(served - checks.ALLOWED_OPS)


def test_an_export_that_writes_a_file_is_refused_unless_trusted(tmp_path):
    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, OBS], tf.float32, name="observations")])
        def act(self, observations):
            tf.io.write_file(str(tmp_path / "written"), "pwned")
            return {"actions": observations[:, :ACT]}

    writer = Writer()
    directory = tmp_path / "export"
    tf.saved_model.save(writer, str(directory), signatures={"serving_default": writer.act})
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "assets" / "metadata.json").write_text(metadata().to_json())
    with pytest.raises(UserError, match=r"runs ops that iql-tf.s exports never use \(.*WriteFile.*\).*--trust_export"):
        evaluation.evaluate_export(str(directory), episodes=1)
    assert not (tmp_path / "written").exists()
    policy, _ = loading.load_policy(directory, trust=True)  # the user's word
    policy(np.zeros((1, OBS), np.float32))
    assert (tmp_path / "written").read_text() == "pwned"


@pytest.fixture(scope="module")
def intact_export(tmp_path_factory, hopper_rows):
    """An export whose first kernel value is known (to find its bytes in saved_model.pb)."""
    directory = tmp_path_factory.mktemp("intact") / "policy"
    weights = make_agent().member_weights(0)
    export_policy(weights, "relu", preprocessing(hopper_rows["observations"][:64], False), directory, metadata())
    return directory, weights["kernel_0"]


def flip_a_kernel_bit(directory, kernel):
    """The lowest bit of the first weight of `kernel` inside saved_model.pb: still a valid model, other actions."""
    graph = bytearray((directory / "saved_model.pb").read_bytes())
    at = bytes(graph).index(np.ascontiguousarray(kernel[0, :4], "<f4").tobytes())
    graph[at] ^= 1
    (directory / "saved_model.pb").write_bytes(bytes(graph))


def damage(directory, name, how):
    path = directory / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else
                     data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:])


@pytest.mark.parametrize("name, how", [("saved_model.pb", "kernel bit"), ("variables/variables.data-00000-of-00001",
                                                                          "truncate"),
                                       ("variables/variables.data-00000-of-00001", "flip"),
                                       ("variables/variables.index", "truncate"), ("policy.tflite", "flip"),
                                       ("policy.onnx", "flip")])
def test_a_damaged_export_is_refused_in_one_line_naming_the_file(intact_export, tmp_path, name, how):
    intact, kernel = intact_export
    directory = tmp_path / "policy"
    shutil.copytree(intact, directory)
    if how == "kernel bit":
        flip_a_kernel_bit(directory, kernel)
        assert checks.served_ops(directory) <= checks.ALLOWED_OPS  # the op check alone would pass it
    else:
        damage(directory, name, how)
    message = rf"^{directory / name}: damaged \(its sha256 is not the one SHA256SUMS records\); export the policy again"
    with pytest.raises(UserError, match=message):
        loading.load_policy(directory)
    with pytest.raises(UserError, match=message):  # iql-evaluate
        evaluation.evaluate_export(str(directory), episodes=1)
    with pytest.raises(UserError, match=message):  # iql-generate --kind=policy
        generators.generate_policy("tests/damaged-v0", str(directory), noise_std=0.1, num_steps=10)


def test_an_intact_export_loads_and_one_without_checksums_loads_with_a_warning(intact_export, tmp_path, caplog):
    intact, _ = intact_export
    assert "saved_model.pb" in (intact / checks.CHECKSUMS_FILE).read_text()
    loading.load_policy(intact)
    shutil.copytree(intact, tmp_path / "old")
    (tmp_path / "old" / checks.CHECKSUMS_FILE).unlink()  # as iql-tf 0.4 exported
    policy, _ = loading.load_policy(tmp_path / "old")
    assert policy(np.zeros((2, OBS), np.float32)).shape == (2, ACT)
    assert "has no SHA256SUMS (exported by iql-tf 0.4 or earlier)" in caplog.text


def test_the_onnx_model_of_an_export_loads_as_its_policy_and_a_file_that_is_none_is_refused(intact_export, tmp_path):
    intact, _ = intact_export
    served, _ = loading.load_policy(intact)
    onnx_policy, onnx_metadata = loading.load_policy(intact / ONNX_FILE)  # iql-evaluate RUN_DIR/export/policy/policy.onnx
    observations = np.random.default_rng(0).standard_normal((8, OBS)).astype(np.float32)
    np.testing.assert_allclose(onnx_policy(observations), served(observations), rtol=1e-5, atol=1e-5)
    assert onnx_metadata == read_policy_metadata(intact)

    directory = tmp_path / "policy"
    shutil.copytree(intact, directory)
    damage(directory, ONNX_FILE, "flip")
    with pytest.raises(UserError, match=rf"^{directory / ONNX_FILE}: damaged \(its sha256"):
        loading.load_policy(directory / ONNX_FILE)
    stray = tmp_path / "stray" / "model.onnx"
    stray.parent.mkdir()
    stray.write_text("not a model")
    with pytest.raises(UserError, match=rf"^{stray}: not an ONNX model onnxruntime can run \(.*\); give the "
                                        "policy.onnx of an export"):
        evaluation.evaluate_export(str(stray), episodes=1)
    with pytest.raises(UserError, match=rf"^{tmp_path / 'missing.onnx'}: not found; give the ONNX model of an export"):
        loading.load_policy(tmp_path / "missing.onnx")


def test_metadata_of_exports_before_onnx_reads_as_having_no_onnx_model(tmp_path):
    fields = json.loads(metadata().to_json())
    del fields["onnx"]
    (tmp_path / METADATA_PATH).parent.mkdir(parents=True)
    (tmp_path / METADATA_PATH).write_text(json.dumps({**fields, "format_version": 1}))
    assert read_policy_metadata(tmp_path) == metadata(onnx=None, format_version=1)
    (tmp_path / METADATA_PATH).write_text(json.dumps({**fields, "format_version": 2}))
    with pytest.raises(UserError, match="missing field 'onnx'"):
        read_policy_metadata(tmp_path)
