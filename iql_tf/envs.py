"""Gymnasium environments as the datasets describe them, with dict observations flattened; OGBench's
environments (an optional extra) registered when an id of theirs is made.

Dict observations (PointMaze, AntMaze) are flattened by concatenating their entries in sorted key
order (`achieved_goal`, `desired_goal`, `observation`): the same order for conversion, generation,
evaluation and deployment.
"""

import contextlib
import functools
import importlib.util
import io
import os
import re
import warnings
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from iql_tf import maze_camera
from iql_tf.errors import UserError
from iql_tf.json_records import parse_json_object

_registered = False
OGBENCH_INSTALL = "pip install 'iql-tf[ogbench]' (or pip install ogbench==1.2.2)"
_OGBENCH_ENV = re.compile(r"^[a-z0-9-]+-singletask(-task\d+)?-v\d+$")  # cube-single-singletask-task2-v0


_renders_here = False  # whether this process renders with MuJoCo (`allow_rendering`)


def allow_rendering() -> None:
    """Called first by a process that renders with MuJoCo (an environment's process, a generator's worker): MuJoCo
    is then imported with MUJOCO_GL as the user set it."""
    global _renders_here
    _renders_here = True


@contextlib.contextmanager
def mujoco_without_offscreen_rendering() -> Iterator[None]:
    """Around the first import of MuJoCo in a process that never renders with it (environments that do run in
    processes of their own: `env_process.py`): MUJOCO_GL hidden from it. MuJoCo imported with MUJOCO_GL=osmesa
    loads Mesa's LLVM beside TensorFlow's, which aborts the process when it exits; the processes spawned later
    still see MUJOCO_GL."""
    hidden = None if _renders_here else os.environ.pop("MUJOCO_GL", None)
    try:
        yield
    finally:
        if hidden is not None:
            os.environ["MUJOCO_GL"] = hidden


def register_environments() -> None:
    """Registers gymnasium-robotics' environments (PointMaze, AntMaze, Adroit, Kitchen) and the camera maze
    (`maze_camera.ENV_ID`) once."""
    global _registered
    if not _registered:
        # gymnasium-robotics prints a notice about Adroit reward versions to stderr on every import
        # (README: "Adroit"); keep it out of every command's output.
        with contextlib.redirect_stderr(io.StringIO()), mujoco_without_offscreen_rendering():
            import gymnasium_robotics

            gym.register_envs(gymnasium_robotics)
        # PointMaze UMaze through a top-down camera (maze_camera.py), for learning from pixels.
        gym.register(maze_camera.ENV_ID, entry_point="iql_tf.maze_camera:make", max_episode_steps=300)
        _registered = True


def is_ogbench_env(env_id: str) -> bool:
    """Whether `env_id` is shaped like one of OGBench's single-task environments (`cube-single-singletask-task2-v0`)."""
    return bool(_OGBENCH_ENV.match(env_id))


def require_ogbench(what: str) -> None:
    """ogbench is an optional extra: its absence is one line with the install command (found, not imported:
    importing it is `register_ogbench_environments`' job)."""
    if importlib.util.find_spec("ogbench") is None:
        raise UserError(f"{what} needs the ogbench package, which is not installed: {OGBENCH_INSTALL}")


def register_ogbench_environments() -> None:
    """Registers OGBench's environments with gymnasium (importing ogbench does). Their spaces have float64
    bounds, so gymnasium's checker warns at every first reset that it casts them to float32, which says
    nothing to a user: that one warning is ignored from now on."""
    require_ogbench("an OGBench environment")
    with mujoco_without_offscreen_rendering():
        import ogbench  # noqa: F401

    warnings.filterwarnings("ignore", message=r".*Box (low|high)'s precision lowered")


@contextlib.contextmanager
def quiet_ogbench_construction() -> Iterator[None]:
    """Building an OGBench environment, without notes that say nothing to a user: dm_control's choice of an
    OpenGL backend (absl INFO, when the first environment imports it) and GLFW's missing display (iql-tf
    renders nothing of OGBench's)."""
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*DISPLAY environment variable")
            yield
    finally:
        logging.set_verbosity(verbosity)


def has_parts(space: gym.Space) -> bool:
    """Whether observations of `space` are of parts (`data/parts.py`): a flat Dict with an image, a uint8 Box of
    [height, width, channels], among its entries."""
    return isinstance(space, gym.spaces.Dict) and any(
        isinstance(entry, gym.spaces.Box) and entry.dtype == np.uint8 and len(entry.shape) == 3
        for entry in space.spaces.values())


def observation_keys(space: gym.Space) -> Optional[list]:
    """The flattening order of a Dict observation space, or None for a Box and for a space of parts (`has_parts`),
    which is never flattened.

    Nested Dicts (FrankaKitchen's per-task goals) give 'outer/inner' paths, sorted at every level.
    """
    if not isinstance(space, gym.spaces.Dict) or has_parts(space):
        return None
    keys = []
    for key in sorted(space.spaces.keys()):
        inner = observation_keys(space.spaces[key])
        keys += [key] if inner is None else [f"{key}/{path}" for path in inner]
    return keys


def observation_part(tree: Any, key: str) -> Any:
    """The entry of a (nested) dict observation or Dict space at a key of `observation_keys`."""
    for part in key.split("/"):
        tree = tree[part]
    return tree


def flatten_observation(observation: Any, keys: Optional[Sequence[str]]) -> Any:
    """One observation (or a batch, leading axes kept) as a float32 vector in the fixed key order; an image
    (uint8 [..., height, width, channels]) as it is; an observation of parts as a dict of them."""
    if keys is None and isinstance(observation, Mapping):
        return {name: flatten_observation(value, None) for name, value in observation.items()}
    if keys is None:
        array = np.asarray(observation)
        return array if array.dtype == np.uint8 and array.ndim >= 3 else array.astype(np.float32)
    return np.concatenate(
        [np.asarray(observation_part(observation, key), dtype=np.float32) for key in keys], axis=-1
    )


def stack_frames(env: gym.Env, frame_stack: int) -> gym.Env:
    """`env` with image observations stacked as training stacks them (`data/frame_stacks.py`): its last
    `frame_stack` frames along the channels, oldest first, the reset frame repeated at an episode's start
    (gymnasium's FrameStackObservation, then the frames moved onto the channels); `env` itself for 1."""
    if frame_stack == 1:
        return env
    stacked = gym.wrappers.FrameStackObservation(env, frame_stack, padding_type="reset")
    space = env.observation_space

    def onto_channels(frames: np.ndarray, box: gym.spaces.Box) -> np.ndarray:
        height, width, channels = box.shape
        return np.moveaxis(np.asarray(frames), 0, 2).reshape(height, width, frame_stack * channels)

    def stacked_box(box: gym.spaces.Box) -> gym.spaces.Box:
        return gym.spaces.Box(np.tile(box.low, frame_stack), np.tile(box.high, frame_stack), dtype=box.dtype)

    if not isinstance(space, gym.spaces.Dict):
        return gym.wrappers.TransformObservation(stacked, lambda frames: onto_channels(frames, space),
                                                 stacked_box(space))
    images = {name for name, box in space.spaces.items() if len(box.shape) == 3 and box.dtype == np.uint8}
    # Parts: each image's frames onto its channels, a vector the newest alone (as training stacks them).
    return gym.wrappers.TransformObservation(
        stacked, lambda frames: {name: onto_channels(value, space[name]) if name in images else np.asarray(value)[-1]
                                 for name, value in frames.items()},
        gym.spaces.Dict({name: stacked_box(box) if name in images else box for name, box in space.spaces.items()}))


VISUAL = "visual-"  # OGBench's environments and datasets seen through its camera: visual-cube-single-...


def without_camera(name: str) -> str:
    """`cube-single-v0` of `visual-cube-single-v0` (and of itself)."""
    return name[len(VISUAL):] if name.startswith(VISUAL) else name


def renders_with_mujoco(env_id: str) -> bool:
    """Whether `env_id`'s observations are frames MuJoCo renders (OGBench's visual tasks), which is stepped in a
    process of its own (`env_process.py` says why)."""
    return is_ogbench_env(env_id) and env_id.startswith(VISUAL)


def make_env(
    env_id: str,
    env_kwargs: Optional[Mapping[str, Any]] = None,
    max_episode_steps: Optional[int] = None,
) -> gym.Env:
    """Builds `env_id` with its kwargs (in a process of its own if it renders with MuJoCo); a missing or broken
    environment is a UserError."""
    if renders_with_mujoco(env_id):
        from iql_tf.env_process import ProcessEnv

        return ProcessEnv(functools.partial(_make_rendering, env_id, dict(env_kwargs or {}), max_episode_steps),
                          env_id)
    return _make_here(env_id, env_kwargs, max_episode_steps)


def _make_rendering(env_id: str, env_kwargs: Dict[str, Any], max_episode_steps: Optional[int]) -> gym.Env:
    """`make_env` in the process of an environment that renders (`env_process.ProcessEnv`'s worker)."""
    allow_rendering()
    return _make_here(env_id, env_kwargs, max_episode_steps)


def _make_here(env_id: str, env_kwargs: Optional[Mapping[str, Any]], max_episode_steps: Optional[int]) -> gym.Env:
    register_environments()
    quiet = contextlib.nullcontext()
    if is_ogbench_env(env_id):
        register_ogbench_environments()
        quiet = quiet_ogbench_construction()
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    try:
        with quiet, mujoco_without_offscreen_rendering():  # (OGBench's environments import dm_control on their way)
            return gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        raise UserError(
            f"cannot make environment {env_id!r}: {error}; check the env id in the dataset metadata "
            "and that gymnasium-robotics / mujoco are installed (pip install -r requirements.txt)"
        ) from error
    except (TypeError, ValueError) as error:  # kwargs the environment does not take, or bad values
        raise UserError(
            f"cannot make environment {env_id!r} with kwargs {kwargs}: {error}; fix the env kwargs"
        ) from error


_NOT_THIS_ENVIRONMENT = ("the dataset does not belong to this environment; name the environment the data was "
                         "collected in (the converter's --env_id, make_dataset.env_id) or use the right dataset")


def check_env_fits(env: gym.Env, keys: Optional[Sequence[str]], observation_dim: int,
                   action_dim: int, dataset: str, image_shape: Optional[Sequence[int]] = None,
                   parts: Optional[Sequence[Any]] = None) -> None:
    """Raises a UserError when the dataset's shapes (`image_shape`: of its image observations) do not fit the
    environment's spaces, or when its observations are of `parts`, which no environment is stepped with yet."""
    env_id = env.spec.id if env.spec else type(env).__name__
    if parts or has_parts(env.observation_space):
        _check_parts_fit(env, env_id, parts, action_dim, dataset)
        return
    env_keys = observation_keys(env.observation_space)
    if (env_keys is None) != (keys is None) or env_keys is not None and set(keys) - set(env_keys):
        raise UserError(
            f"dataset {dataset} has observations {'made of ' + ', '.join(keys) if keys else 'as one array'}"
            f", but environment {env_id} has {'made of ' + ', '.join(env_keys) if env_keys else 'one array'}: "
            f"{_NOT_THIS_ENVIRONMENT}"
        )
    sample = flatten_observation(env.observation_space.sample(), keys)
    env_images = sample.dtype == np.uint8
    if env_images != (image_shape is not None) or env_images and list(sample.shape) != list(image_shape):
        seen = lambda images, shape: f"images of shape {list(shape)}" if images else "vectors"  # noqa: E731
        raise UserError(f"dataset {dataset} has observations that are {seen(image_shape is not None, image_shape)}, "
                        f"but environment {env_id} gives {seen(env_images, sample.shape)}: {_NOT_THIS_ENVIRONMENT}")
    env_observation_dim = int(np.prod(sample.shape)) if env_images else sample.shape[-1]
    env_action_dim = int(np.prod(env.action_space.shape))
    if (env_observation_dim, env_action_dim) != (observation_dim, action_dim):
        raise UserError(
            f"dataset {dataset} has observations of size {observation_dim} and actions of size {action_dim}, "
            f"but environment {env_id} has {env_observation_dim} and {env_action_dim}: {_NOT_THIS_ENVIRONMENT}"
        )


def _check_parts_fit(env: gym.Env, env_id: str, parts: Optional[Sequence[Any]], action_dim: int, dataset: str
                     ) -> None:
    """`check_env_fits` where the dataset or the environment has observations of parts (`parts`: Part objects or
    their records): each part an entry of the environment's Dict of its shape (a vector of its size)."""
    space = env.observation_space
    described = [(part["name"], tuple(part["shape"]), part["dtype"]) if isinstance(part, Mapping) else
                 (part.name, tuple(part.shape), part.dtype) for part in parts or ()]
    names = ", ".join(name for name, _, _ in described)
    if not has_parts(space) or not described:
        given = f"observations of parts ({names})" if described else "observations as one array"
        gives = (f"observations of parts ({', '.join(space.spaces)})" if has_parts(space)
                 else "observations without an image part")
        raise UserError(f"dataset {dataset} has {given}, but environment {env_id} gives {gives}: {_NOT_THIS_ENVIRONMENT}")
    for name, shape, dtype in described:
        entry = space.spaces.get(name)
        if entry is None:
            raise UserError(f"dataset {dataset} has the observation part {name!r}, which environment {env_id} does not "
                            f"give (its parts: {', '.join(space.spaces)}): {_NOT_THIS_ENVIRONMENT}")
        if tuple(entry.shape) != shape or (entry.dtype == np.uint8) != (dtype == "uint8"):
            raise UserError(f"dataset {dataset} has the observation part {name!r} of shape {list(shape)} ({dtype}), but "
                            f"environment {env_id} gives {list(entry.shape)} ({entry.dtype}): {_NOT_THIS_ENVIRONMENT}")
    env_action_dim = int(np.prod(env.action_space.shape))
    if env_action_dim != action_dim:
        raise UserError(f"dataset {dataset} has actions of size {action_dim}, but environment {env_id} has "
                        f"{env_action_dim}: {_NOT_THIS_ENVIRONMENT}")


def parse_env_kwargs(text: str) -> Dict[str, Any]:
    """The --env_kwargs flag: a JSON object."""
    return parse_json_object(text, "--env_kwargs", "pass an object such as '{\"continuing_task\": false}'")
