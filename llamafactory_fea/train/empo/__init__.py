r"""The `empo` stage: entity-centric preference optimisation (EMPO) on FEA pairs (see README.md; light to import)."""

from ..grpo import STAGE as GRPO_STAGE  # noqa: F401  (declared first: LLaMA Board lists EMPO after GRPO and synthesis)
from ..plugin import PluginStage, register_stage
from ..synth import STAGE as SYNTH_STAGE  # noqa: F401


STAGE = register_stage(
    PluginStage(
        name="empo",
        board_name="EMPO",
        runner="llamafactory_fea.train.empo.workflow.run_empo",
        arguments="llamafactory_fea.train.empo.args.EMPOArguments",
        pairwise=True,
    )
)
