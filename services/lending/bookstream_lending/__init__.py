"""The Lending service: the robotic arm, its automated storage, loans and user counts."""
