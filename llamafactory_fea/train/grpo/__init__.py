r"""The `grpo` stage: GRPO with Facial-R1's rewards on TRL's GRPOTrainer (see README.md; light to import)."""

from ..plugin import PluginStage, register_stage


STAGE = register_stage(
    PluginStage(
        name="grpo",
        board_name="GRPO",
        runner="llamafactory_fea.train.grpo.workflow.run_grpo",
        arguments="llamafactory_fea.train.grpo.args.GRPOArguments",
    )
)
