"""The classes of the model in the ``model`` channel (incremental training), which the dataset must name.

A model trained on from another keeps its class ids: its output channel ``i`` goes on meaning class
``i``. So with a ``model`` channel, the dataset's ``labelmap.txt`` must name exactly the classes of
that model's ``classes.json``; an added, missing or renamed class is refused in one sentence naming
each. CVAT writes ``labelmap.txt`` sorted by name rather than in the task's order, so the same names
in another order are the same classes: the dataset's table is put in the model's order (each name
keeping its colour) and its masks are read in that order. A model without ``classes.json`` names no
classes; then only ``num_classes`` has to agree, which the architecture check does.
"""

from __future__ import annotations

from ... import classes, paths
from ...archives import model_archive, read_member
from ...classes import ClassTable
from ...errors import UserError
from ...names import shown

MAX_CLASSES_FILE_BYTES = 1 << 20  # 254 classes with long names are a few tens of kilobytes


def model_classes() -> ClassTable | None:
    """The class table of the model in the ``model`` channel; None without a channel or ``classes.json``."""
    channel = paths.channel_dir(paths.MODEL_CHANNEL)
    if not channel.is_dir():
        return None
    own = channel / classes.FILE_NAME
    if own.is_file():
        return classes.from_text(own.read_bytes(), f"The model channel's {classes.FILE_NAME}")
    if (channel / paths.HYPERPARAMS_FILE).exists():
        return None
    archive = model_archive(channel)
    text = read_member(archive, classes.FILE_NAME, MAX_CLASSES_FILE_BYTES) if archive is not None else None
    return None if text is None else classes.from_text(text, f"{classes.FILE_NAME} in {archive.name}")


def _listed(names) -> str:
    return ", ".join(f"'{shown(name)}'" for name in names)


def in_model_order(table: ClassTable, source: str) -> tuple[ClassTable, str | None]:
    """``table`` (the dataset's, from ``source``) in the order of the model channel's classes, and a note
    when that reordered it; refused in one sentence when the two name different classes."""
    model, source = model_classes(), shown(source)
    if model is None or model.names == table.names:
        return table, None
    added = [name for name in table.names if name not in model.names]
    missing = [name for name in model.names if name not in table.names]
    if added or missing:
        differences = []
        if added:
            differences.append(f"{source} adds {_listed(added)}")
        if missing:
            differences.append(f"{'it' if added else source} lacks {_listed(missing)}")
        raise UserError(
            f"The dataset's classes differ from those of the model in the 'model' channel "
            f"({' and '.join(differences)}); incremental training keeps the model's classes "
            f"({_listed(model.names)}), so label with those, or train a new model without the 'model' channel"
        )
    colours = dict(zip(table.names, table.colors))
    reordered = ClassTable(model.names, tuple(colours[name] for name in model.names))
    note = (
        f"{source} names the model channel's classes in another order; they keep the model's class ids: "
        f"{', '.join(f'{i} {shown(name)}' for i, name in enumerate(model.names))}"
    )
    return reordered, note
