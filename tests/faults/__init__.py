"""Fault tests: votes streamed through real processes while services crash and return."""
