"""Online fine-tuning: one update per environment step into a growing buffer, the same preprocessing online,
crash safety of the online transitions, and the mistakes refused before training."""


import gin
import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import config, results, trainer
from iql_tf.envs import make_env
from iql_tf.errors import UserError
from iql_tf.settings import AgentSettings, DataSettings, RunSettings


@pytest.fixture
def finetune(pointmaze_root, tmp_path, monkeypatch):
    """A tiny fine-tuning run on the example PointMaze dataset (400 transitions): 20 offline updates, then
    `online` environment steps."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))

    def parse(online=40, *extra):
        gin.clear_config()
        config.parse_gin(["antmaze_finetune"], [
            "make_dataset.source = 'pointmaze/umaze-example-v0'", f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
            "IQLAgent.hidden_dims = (16, 16)", "IQLAgent.batch_size = 16", "IQLAgent.jit_compile = False",
            "train.num_offline_steps = 20", f"train.num_online_steps = {online}", "train.eval_interval = 30",
            "train.eval_episodes = 2", "train.checkpoint_interval = 30", "train.log_interval = 10",
            "train.exploration_noise = 0.1", "train.progress_bar = False", *extra])

    return parse


def short_episodes():
    """The dataset's evaluation maze with 15-step episodes, so that a few dozen online steps end some."""
    from iql_tf.generation import pointmaze

    return make_env("PointMaze_UMaze-v3", pointmaze.UMAZE.eval_env_kwargs(), 15)


def test_the_online_phase_makes_one_update_per_step_into_a_growing_buffer(finetune, tmp_path):
    finetune(40)
    run = trainer.TrainingRun(tmp_path / "run", DataSettings(), AgentSettings(), RunSettings(), env_fn=short_episodes)
    with run.files.lock():
        run.build()
        run.restore()
        offline = run.batches.offline_size
        assert run.batches.capacity == offline + 40
        run.loop()
        assert int(run.agent.step) == 60 and int(run.batches.size) == offline + 40
        rows = run.batches.online_transitions(0, 40)
        # Online rewards go through the offline preprocessing (antmaze: r - 1), terminals only on termination.
        assert set(np.unique(rows["rewards"])) <= {-1.0, 0.0}
        assert rows["masks"].min() in (0.0, 1.0) and np.all(np.abs(rows["actions"]) < 1.0)
        np.testing.assert_array_equal(rows["observations"][1:][rows["masks"][:-1] == 1][:5],
                                      rows["next_observations"][:-1][rows["masks"][:-1] == 1][:5])
        run.finish()
    tags = set()
    for event_file in (tmp_path / "run").glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update((value.tag, event.step) for value in event.summary.value)
    names = {tag for tag, _ in tags}
    assert {"online/env_steps", "online/buffer_size", "online/episode_return", "train/critic_loss"} <= names
    assert {step for tag, step in tags if tag == "eval/success_rate"} == {30, 60}  # one curve over both phases
    # The report marks where online began and never pools a fine-tuning run with offline-only ones.
    [reported] = results.collect(tmp_path / "run")
    assert reported.online_from == 20 and "train.num_online_steps=40" in reported.configuration


def test_a_crash_online_resumes_with_every_transition_up_to_the_last_checkpoint(finetune, tmp_path, monkeypatch):
    finetune(40)
    saved = {}
    original_save = trainer.TrainingRun.save

    def save(run, step):  # what the buffer held when each checkpoint was written
        original_save(run, step)
        saved[step] = run.batches.online_transitions(0, int(run.batches.size) - run.batches.offline_size)
        if step == 30:
            raise KeyboardInterrupt("killed")  # the process dies right after the checkpoint (online step 10)

    monkeypatch.setattr(trainer.TrainingRun, "save", save)
    with pytest.raises(KeyboardInterrupt):
        trainer.run_training(str(tmp_path / "run"))
    monkeypatch.setattr(trainer.TrainingRun, "save", original_save)
    chunks = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("online-*.npz"))
    assert chunks == ["online-0000000000-0000000010.npz"]  # only the online transitions, not the dataset

    # A damaged chunk is named, not a zipfile traceback; nothing is deleted.
    chunk = tmp_path / "run" / "checkpoints" / chunks[0]
    good = chunk.read_bytes()
    chunk.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    damaged = trainer.TrainingRun(tmp_path / "run", DataSettings(), AgentSettings(), RunSettings())
    with damaged.files.lock(), pytest.raises(UserError, match=rf"{chunk}: damaged \(its sha256 does not match"):
        damaged.build()
        damaged.restore()
    damaged.close()
    chunk.write_bytes(good)

    run = trainer.TrainingRun(tmp_path / "run", DataSettings(), AgentSettings(), RunSettings())
    with run.files.lock():
        run.build()
        run.restore()
        assert int(run.agent.step) == 30 and int(run.batches.size) == run.batches.offline_size + 10
        restored = run.batches.online_transitions(0, 10)
        for key, value in saved[30].items():
            np.testing.assert_array_equal(restored[key], value, err_msg=key)
        run.loop()
        assert int(run.batches.size) == run.batches.offline_size + 40
        run.finish()


def test_mistakes_are_refused_before_training(finetune, tmp_path, write_npz):
    finetune(10, "IQLAgent.actor_cosine_decay = True")
    with pytest.raises(UserError, match="actor_cosine_decay = True with train.num_online_steps"):
        trainer.run_training(str(tmp_path / "a"))
    finetune(10)
    with pytest.raises(UserError, match=r"observations made of achieved_goal, desired_goal, observation, but "
                                        r"environment Hopper-v5 has one array"):
        trainer.run_training(str(tmp_path / "b"), env_fn=lambda: make_env("Hopper-v5"))
    finetune(10, f"make_dataset.source = '{write_npz()}'")
    with pytest.raises(UserError, match="names no environment, so it cannot be fine-tuned online"):
        trainer.run_training(str(tmp_path / "c"))
    # An offline-only run cannot grow an online phase in its directory.
    finetune(0)
    trainer.run_training(str(tmp_path / "offline"))
    finetune(10)
    with pytest.raises(UserError, match=r"num_online_steps: 0 -> 10.*cannot grow an online phase"):
        trainer.run_training(str(tmp_path / "offline"))
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c") if (p / "checkpoints").exists())


class GoalLine(gym.Env):
    """x starts at 0 and moves by 0.5 a step (whatever the action); reward 1 and termination on reaching 1.5.
    The second episode is truncated after 2 steps, as a time limit would."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    episodes = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.steps, self.episodes = 0.0, 0, self.episodes + 1
        return np.array([self.x, 7.0], np.float32), {}

    def step(self, action):
        self.x += 0.5
        self.steps += 1
        terminated = self.x >= 1.5
        truncated = self.episodes == 2 and self.steps == 2
        return np.array([self.x, 7.0], np.float32), float(terminated), terminated, truncated, {"success": terminated}


def test_online_transitions_terminate_on_the_goal_keep_bootstrapping_on_time_limits_and_share_the_preprocessing(
        tmp_path):
    from iql_tf.agent import IQLAgent
    from iql_tf.checkpoints import Checkpoints
    from iql_tf.data import rewards
    from iql_tf.data.preprocessing import Preprocessing
    from iql_tf.online import OnlinePhase
    from iql_tf.replay_buffer import ReplayBuffer

    offline = {"observations": np.zeros((4, 2)), "actions": np.zeros((4, 1)), "rewards": np.zeros(4),
               "next_observations": np.zeros((4, 2)), "terminals": np.zeros(4)}
    buffer = ReplayBuffer(offline, 2, capacity=4 + 5)
    agent = IQLAgent(2, 1, AgentSettings(hidden_dims=(4,), batch_size=2, jit_compile=False), actor_decay_steps=10)
    # Normalised observations and an affine reward map, both as the offline data would have fixed them.
    preprocessing = Preprocessing(np.float32([1.0, 5.0]), np.float32([2.0, 4.0]), np.float32([-1.0]),
                                  np.float32([1.0]), rewards.RewardTransform("locomotion", scale=10.0, shift=-1.0),
                                  normalize_observations=True)
    online = OnlinePhase(GoalLine(), None, preprocessing, agent, buffer, seed=0, exploration_noise=0.0,
                         checkpoints=Checkpoints(tmp_path))
    for _ in range(5):
        online.env_step()
    rows = buffer.online_transitions(0, 5)
    x = np.array([0.0, 0.5, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(rows["observations"], np.stack([(x - 1.0) / 2.0, np.full(5, (7.0 - 5.0) / 4.0)], 1))
    np.testing.assert_allclose(rows["next_observations"][:, 0], (x + 0.5 - 1.0) / 2.0)  # s', not the next reset
    np.testing.assert_allclose(rows["rewards"], [-1.0, -1.0, 9.0, -1.0, -1.0])  # r * 10 - 1, as offline
    np.testing.assert_array_equal(rows["masks"], [1.0, 1.0, 0.0, 1.0, 1.0])  # 0 only on reaching the goal
