"""Refusing exports that would run code of another kind: a SavedModel is a program, not data.

Before an export is loaded (`iql-evaluate`, `iql-generate --kind=policy`), every op that loading and serving
can run (every graph node but the saver's save call, every function its object graph names, and what they
call through the function library) must be one the project's own exports use: `ALLOWED_OPS`, taken from real exports of every Keras activation the
tests try (`tests/test_export.py` checks that a fresh export needs nothing more). Anything else, a file write
(`WriteFile`), a Python call (`PyFunc`), is refused with one line naming the op, unless the caller trusts the
export (`--trust_export`).
"""

import pathlib
from typing import Dict, Iterable, List, Set

from iql_tf.errors import UserError

# From the project's exports (the policy MLP, its preprocessing, sampling, and the loader's restore).
ALLOWED_OPS = frozenset({
    "AddV2", "Const", "Elu", "Erfc", "Exp", "Identity", "IdentityN", "LeakyRelu", "MatMul", "Maximum", "Minimum",
    "Mul", "Neg", "NoOp", "Pack", "PartitionedCall", "Placeholder", "Pow", "RealDiv", "Relu", "Relu6", "RestoreV2", "Select",
    "Selu", "Shape", "Sigmoid", "Softplus", "Softsign", "Square", "StatefulPartitionedCall", "StatelessRandomGetKeyCounter",
    "StatelessRandomNormalV2", "Sub", "Sum", "Tanh",
})


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


def check_export(export_dir: "str | pathlib.Path", trust: bool = False) -> None:
    """A UserError naming the first op of `export_dir` outside ALLOWED_OPS (nothing when `trust`)."""
    if trust:
        return
    unknown = sorted(served_ops(export_dir) - ALLOWED_OPS)
    if unknown:
        raise UserError(f"{export_dir}: the SavedModel runs ops that iql-tf's exports never use ({', '.join(unknown)}); "
                        "it may do anything (write files, run code): pass --trust_export only if you trust who "
                        "made it")
