"""Tasks for the authentik stack on Docker Swarm: render, plan, deploy, status, logs, rollback, remove."""

from invoke import Collection

from authops import output
from authops.settings import load_settings
from authops.stackfile import render_stack
from authops.tasking import ENV_HELP, ops_task


@ops_task(help={"env": ENV_HELP})
def render(c, env=None):
    """Print the stack file exactly as stack.deploy would deploy it."""
    settings = load_settings(env)
    rendered = render_stack(settings)
    output.emit(rendered.text.rstrip("\n"))


ns = Collection("stack")
ns.add_task(render)
