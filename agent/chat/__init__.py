"""The chat face: typed tools over the run store, slash commands, a LangChain agent and a background run
manager. Run control itself (stop, pause, approvals, changes) lives beside the run folder, in
:mod:`activesynth.agent.control`; the chat and the web page only send those messages.

Heavy libraries (langchain, playwright) are imported only where used.
"""
