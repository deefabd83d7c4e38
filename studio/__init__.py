"""Studio: a plugin-based creative-media generation pipeline.

Scripting:
    import studio
    result = studio.run("pipelines/showcase.yaml", overrides=["title.template=Hi"])
    for artifact in result.artifacts():
        print(artifact.path)

Plugin authors import the contract from here (docs/plugins.md documents every name):
the generator contract (Generator, Params, StepContext, Artifact, media_input,
model_input, batch_groups, check_finite), errors to raise (UserError for a mistake in
the user's input: exit code 2), hookimpl and Writer for the hooks, Trainer and
TrainerOptions for `studio train`, and the helper modules in PUBLIC_MODULES
(`from studio.weights import loading`, ...). Nothing else is promised to stay put.
"""

from __future__ import annotations

from studio.version import __version__

# Modules whose `__all__` is public too: errors and the helpers that word them,
# checkpoint guards, resource limits, content sniffing, media types, training, and test
# helpers for plugin authors.
PUBLIC_MODULES = ("errors", "limits", "media", "sniff", "testing", "training", "weights")

# Every name is imported when first used, so `import studio` (which `python -m studio`
# and every `studio.x` import start with) costs nothing: the command line stays fast and
# Ctrl-C while it starts is still handled by `studio.launch`.
_WHERE = {
    "media": "studio.media",
    "Writer": "studio.execute.artifacts",
    "NonFiniteOutput": "studio.errors", "PipelineError": "studio.errors", "StudioError": "studio.errors",
    "UserError": "studio.errors",
    "Artifact": "studio.generator", "Generator": "studio.generator", "Params": "studio.generator",
    "StepContext": "studio.generator", "batch_groups": "studio.generator", "media_input": "studio.generator",
    "model_input": "studio.generator",
    "hookimpl": "studio.hookspecs",
    "check_finite": "studio.execute.runtime",
    # the API pulls in the executor; plugins importing `studio` should not pay for it
    "load": "studio.api", "validate": "studio.api", "plan": "studio.api", "run": "studio.api",
    "Pipeline": "studio.api",
    "record_evaluation": "studio.runs.evaluations", "evaluation_problem": "studio.runs.evaluations",
    "RunReader": "studio.runs.dataset",
    "Trainer": "studio.training", "TrainerOptions": "studio.training", "TrainConfig": "studio.training",
}


def __getattr__(name: str):
    import importlib

    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'studio' has no attribute {name!r}")
    found = importlib.import_module(module)
    value = found if module == f"studio.{name}" else getattr(found, name)
    globals()[name] = value  # once
    return value


__all__ = ["Artifact", "Generator", "NonFiniteOutput", "Params", "PipelineError", "StepContext", "StudioError",
           "UserError", "Writer", "__version__", "batch_groups", "check_finite", "hookimpl", "media", "media_input",
           "model_input", "Trainer", "TrainerOptions", "TrainConfig", "load", "validate", "plan", "run", "Pipeline",
           "record_evaluation", "evaluation_problem", "RunReader"]
