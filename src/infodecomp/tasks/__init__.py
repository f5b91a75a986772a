"""Ground-truth tasks: the "Beyond Normal" MI suite, conditional-MI tasks and image worlds."""

from infodecomp.tasks.images import (
    DigitsWorld,
    ShapesBatch,
    ShapesWorld,
    TwoObjectShapesWorld,
    shape_mask,
)
from infodecomp.tasks.vector import (
    ConditionalTask,
    UnknownTaskError,
    VectorTask,
    beyond_normal_tasks,
    conditional_tasks,
    get_task,
    task_ids,
)

__all__ = [
    "ConditionalTask",
    "DigitsWorld",
    "ShapesBatch",
    "ShapesWorld",
    "TwoObjectShapesWorld",
    "UnknownTaskError",
    "VectorTask",
    "beyond_normal_tasks",
    "conditional_tasks",
    "get_task",
    "shape_mask",
    "task_ids",
]
