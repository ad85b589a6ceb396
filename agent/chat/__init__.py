"""Chat-driven run control: typed tools over the run store, slash commands, a LangChain agent and a
background run manager. Loop hooks: :func:`should_stop`, :func:`should_pause`, :func:`is_approved`.

Heavy libraries (langchain, playwright) are imported only where used.
"""

from activesynth.agent.chat.control import is_approved, should_pause, should_stop

__all__ = ["is_approved", "should_pause", "should_stop"]
