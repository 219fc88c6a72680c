"""What is simulated: GPU presets, model shapes, and the NVLink/PCIe/network topology graph."""
