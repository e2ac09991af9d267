"""Teachers turn problems into rationales: recorded files (offline) or live LLM backends.

Only the torch-free protocol lives here; backends are imported from their own modules so that importing
`edge_distill.teachers` never pulls in torch, llama.cpp or an HTTP client.
"""

from edge_distill.teachers.base import Completion, Teacher

__all__ = ["Completion", "Teacher"]
