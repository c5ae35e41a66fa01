"""lm-eval's own command line with cogcore's model registered: `python -m cogcore.evals.lm_eval_cli <args>`
takes exactly the arguments of `lm_eval` (lm-eval finds models only in its registry, and has no plugin
hook, so the model module must be imported first). For the cogcore suites (an `--include_path` of
RUN/evals/lm_eval/tasks that holds none yet gets them exported over the run's questions first):

    python -m cogcore.evals.lm_eval_cli --model cogcore \\
        --model_args pretrained=RUN/student,index=RUN/index,retriever=hybrid \\
        --include_path RUN/evals/lm_eval/tasks --tasks cogcore \\
        --output_path RUN/evals/lm_eval/results.json --log_samples
"""

import sys

from lm_eval.__main__ import cli_evaluate

import cogcore.evals.lm_eval_model  # noqa: F401  registers --model cogcore
from cogcore.evals.lm_eval_tasks import tasks_for_command_line

if __name__ == "__main__":
    if exported := tasks_for_command_line(sys.argv[1:]):
        print(exported, file=sys.stderr)
    cli_evaluate()
