"""docstring -> function on CodeSearchNet: the benchmark's original task."""

from tasks import Task, register

register(
    Task(
        name="generation",
        summary="a function's code from its docstring's first paragraph (CodeSearchNet)",
        languages=("python", "javascript"),
        metrics=("all",),
        input_field="docstring",
        target_field="code",
        serves="code",
    )
)
