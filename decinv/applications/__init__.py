"""What inversion is for: tree-ring watermarks (watermark, watermark_pipelines), editing, and dataset jobs (jobs).
Imports core and generation."""
