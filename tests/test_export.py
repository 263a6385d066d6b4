"""The exported policy: signatures, metadata, and loading in a process that has only TensorFlow."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from iql_tf.export import export_policy, load_metadata
from iql_tf.networks import GaussianActor

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
    loaded = sorted(name for name, module in sys.modules.items() if module is not None and name.split(".")[0] in BLOCKED)
    np.savez(out_file, actions=actions, sampled=sampled, cold=cold)
    print(json.dumps(loaded))
""")


def make_actor():
    actor = GaussianActor(5, 3, (16, 16), "relu", seed=0)
    actor.mean_head.bias.assign([2.0, -2.0, 0.0])  # pushes some actions close to the bounds
    return actor


def test_export_loads_with_tensorflow_alone_and_matches_the_actor(tmp_path):
    actor = make_actor()
    export_dir = tmp_path / "export" / "policy"
    export_policy(actor, 5, str(export_dir), {"env_id": "Toy-v0", "observation_keys": None, "step": 7})
    observations = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    np.save(tmp_path / "observations.npy", observations)
    (tmp_path / "deploy.py").write_text(DEPLOYMENT_SCRIPT)

    result = subprocess.run(
        [sys.executable, str(tmp_path / "deploy.py"), str(export_dir), str(tmp_path / "observations.npy"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []  # nothing blocked was imported
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["actions"], actor(observations).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["cold"], out["actions"], rtol=1e-5, atol=1e-6)
    assert out["sampled"].shape == (64, 3)
    assert np.all(np.abs(out["sampled"]) <= 1.0) and np.any(np.abs(out["sampled"]) == 1.0)  # clipped
    assert not np.allclose(out["sampled"], out["actions"])
    assert load_metadata(str(export_dir)) == {"env_id": "Toy-v0", "observation_keys": None, "step": 7}


def test_sample_signature_is_reproducible_for_a_seed(tmp_path):
    export_policy(make_actor(), 5, str(tmp_path / "policy"), {})
    policy = tf.saved_model.load(str(tmp_path / "policy"))
    observations = tf.random.normal([4, 5])
    first = policy.sample(observations, tf.constant(1.0), tf.constant([5, 6]))["actions"]
    again = policy.sample(observations, tf.constant(1.0), tf.constant([5, 6]))["actions"]
    other = policy.sample(observations, tf.constant(1.0), tf.constant([7, 8]))["actions"]
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())


def test_export_replaces_an_earlier_one_and_leaves_no_staging_folders(tmp_path):
    directory = tmp_path / "export" / "policy"
    export_policy(make_actor(), 5, str(directory), {"step": 1})
    export_policy(make_actor(), 5, str(directory), {"step": 2})
    assert load_metadata(str(directory)) == {"step": 2}
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["policy"]
