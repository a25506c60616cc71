"""Code summarisation, CodeXGLUE code-to-text: a function's code -> its docstring's first
paragraph, on the same CodeSearchNet examples and cleaning as `generation`, scored with the
code-to-text evaluator's smoothed sentence BLEU-4 (`smoothed_bleu`)."""

from tasks import Task, register

register(
    Task(
        name="summarization",
        summary="a docstring's first paragraph from the function's code (CodeXGLUE code-to-text)",
        languages=("python", "javascript"),
        metrics=("smoothed_bleu", "bleu", "meteor", "exact_match"),
        input_field="code",
        target_field="docstring",
        serves="docstring",
        published="CodeT5 (Wang et al., 2021), code summarization table: smoothed BLEU-4 on "
        "CodeXGLUE code-to-text (Python, JavaScript columns)",
    )
)
