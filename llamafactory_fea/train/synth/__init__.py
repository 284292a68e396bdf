r"""Stage 3 of Facial-R1: reward-verified data synthesis (`stage: synth`) and the synthesis callback (`synth_callback`).

Kept light: this declares the stage and the callback extension by dotted paths (see `train/plugin.py`).
"""

from ..plugin import PluginExtension, PluginStage, register_extension, register_stage


STAGE = register_stage(
    PluginStage(
        name="synth",
        board_name="FEA Synthesis",
        runner="llamafactory_fea.train.synth.workflow.run_synth",
        arguments="llamafactory_fea.train.synth.args.SynthesisArguments",
    )
)
CALLBACK = register_extension(
    PluginExtension(
        name="synth_callback",
        arguments="llamafactory_fea.train.synth.args.SynthesisCallbackArguments",
        callbacks="llamafactory_fea.train.synth.callback.synthesis_callbacks",
    )
)
