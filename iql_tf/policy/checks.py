"""Before an export is loaded (`iql-evaluate`, `iql-generate --kind=policy`): its files are those the exporter
wrote, and it runs no code of another kind.

- **Intact files.** The exporter writes `SHA256SUMS` (`sha256sum`'s format, so `sha256sum -c SHA256SUMS` checks
  it by hand too) last, over every other file of the export. A flipped bit in a kernel constant of
  `saved_model.pb` still loads, passes the op check and serves other actions, and a damaged
  `variables.data` or `variables.index` fails deep inside TensorFlow: both are refused here first, with one
  line naming the file. An export without the file (iql-tf 0.4 and earlier) loads with a warning.
- **Allowed ops.** A SavedModel is a program, not data: every op that loading and serving can run (every graph
  node but the saver's save call, every function its object graph names, and what they call through the
  function library) must be one the project's own exports use: `ALLOWED_OPS`, taken from real exports of every
  Keras activation the tests try (`tests/test_export.py` checks that a fresh export needs nothing more).
  Anything else, a file write (`WriteFile`), a Python call (`PyFunc`), is refused with one line naming the op,
  unless the caller trusts the export (`--trust_export`).
"""

import os
import pathlib
from typing import Dict, Iterable, List, Set

from absl import logging

from iql_tf.data import checksums
from iql_tf.errors import UserError

CHECKSUMS_FILE = "SHA256SUMS"

# From the project's exports (the policy MLP, its image encoders, its preprocessing, sampling, and the loader's
# restore).
ALLOWED_OPS = frozenset({
    "AddV2", "Cast", "ConcatV2", "Const", "Conv2D", "Elu", "Erf", "Erfc", "Exp", "Identity", "IdentityN",
    "LeakyRelu", "MatMul", "MaxPool", "Maximum", "Minimum", "Mul", "Neg", "NoOp", "Pack", "PartitionedCall", "Placeholder", "Pow",
    "RealDiv", "Relu", "Relu6", "Reshape", "RestoreV2", "Select", "Selu", "Shape", "Sigmoid", "Softplus", "Softsign",
    "Square", "StatefulPartitionedCall", "StatelessRandomGetKeyCounter", "StatelessRandomNormalV2", "Sub", "Sum",
    "Tanh",
})  # ConcatV2: a policy of parts concatenates their features


def served_ops(export_dir: "str | pathlib.Path") -> Set[str]:
    """The ops that loading `export_dir` and calling its signatures can run: every node of its graphs but the
    saver's save call (run only to write a SavedModel), every function they call, and every function its
    object graph names (tf.saved_model.load may run any of them: initialisers, resources, restores)."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = pathlib.Path(export_dir) / "saved_model.pb"
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends
        raise UserError(f"{path}: not a SavedModel ({error}); export the policy again") from error
    ops: Set[str] = set()
    for graph in model.meta_graphs:
        nodes = {node.name: node for node in graph.graph_def.node}
        functions = {function.signature.name: function for function in graph.graph_def.library.function}
        save = graph.saver_def.save_tensor_name.split(":")[0]
        roots = [name for name in nodes if name != save]
        ops |= _reachable(roots, nodes, functions, list(graph.object_graph_def.concrete_functions))
    return ops


def _reachable(roots: Iterable[str], nodes: Dict, functions: Dict, called: List[str]) -> Set[str]:
    """Ops of the graph nodes `roots` depend on, and of every function they or `called` call (recursively)."""
    ops: Set[str] = set()
    seen_nodes, seen_functions = set(), set()
    stack = [root.split(":")[0].lstrip("^") for root in roots if root]
    called = list(called)
    while stack:
        name = stack.pop()
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        ops.add(node.op)
        stack += [value.split(":")[0].lstrip("^") for value in node.input]
        called += [attribute.func.name for attribute in node.attr.values() if attribute.func.name]
    while called:
        name = called.pop()
        if name in seen_functions or name not in functions:
            continue
        seen_functions.add(name)
        for node in functions[name].node_def:
            ops.add(node.op)
            called += [attribute.func.name for attribute in node.attr.values() if attribute.func.name]
    return ops


def write_checksums(export_dir: "str | pathlib.Path") -> None:
    """SHA256SUMS over every file of `export_dir` (written by the exporter, last)."""
    export_dir = pathlib.Path(export_dir)
    names = _files(export_dir)
    digests = checksums.files_sha256([export_dir / name for name in names])
    (export_dir / CHECKSUMS_FILE).write_text("".join(f"{digest}  {name}\n" for name, digest in zip(names, digests)))


def verify_checksums(export_dir: "str | pathlib.Path") -> None:
    """A UserError naming the first file that SHA256SUMS lists and `export_dir` lacks or holds otherwise (files it
    does not list, a note put beside the model, say, are not the export's and not read)."""
    export_dir = pathlib.Path(export_dir)
    listing = export_dir / CHECKSUMS_FILE
    fix = "export the policy again (re-run the training command), or copy the export again from where it is intact"
    if not listing.is_file():
        logging.warning("%s has no %s (exported by iql-tf 0.4 or earlier): its files cannot be checked", export_dir,
                        CHECKSUMS_FILE)
        return
    recorded = {}
    for line in listing.read_text(errors="replace").splitlines():
        digest, separator, name = line.partition("  ")
        if not separator or len(digest) != 64 or os.path.isabs(name) or ".." in pathlib.PurePath(name).parts:
            raise UserError(f"{listing}: damaged (a line that is no 'SHA256  FILE'); {fix}")
        recorded[name] = digest
    names = sorted(recorded)
    for name in names:
        if not (export_dir / name).is_file():
            raise UserError(f"{export_dir / name}: missing from the export ({CHECKSUMS_FILE} lists it); {fix}")
    for name, digest in zip(names, checksums.files_sha256([export_dir / name for name in names])):
        if digest != recorded[name]:
            raise UserError(f"{export_dir / name}: damaged (its sha256 is not the one {CHECKSUMS_FILE} records); {fix}")


def _files(export_dir: pathlib.Path) -> List[str]:
    """The export's files, as paths relative to it, sorted; SHA256SUMS itself left out."""
    names = [os.path.relpath(os.path.join(folder, name), export_dir) for folder, _, found in os.walk(export_dir)
             for name in found]
    return sorted(name for name in names if name != CHECKSUMS_FILE)


def check_export(export_dir: "str | pathlib.Path", trust: bool = False) -> None:
    """A UserError naming the first damaged file of `export_dir` (see `verify_checksums`), then the first of its ops
    outside ALLOWED_OPS (not checked when the caller `trust`s the export)."""
    verify_checksums(export_dir)
    if trust:
        return
    unknown = sorted(served_ops(export_dir) - ALLOWED_OPS)
    if unknown:
        raise UserError(f"{export_dir}: the SavedModel runs ops that iql-tf's exports never use ({', '.join(unknown)}); "
                        "it may do anything (write files, run code): pass --trust_export only if you trust who "
                        "made it")
