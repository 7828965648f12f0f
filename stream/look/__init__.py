"""How a recast face is drawn into the shot: alignment by quad, the piecewise-affine warp, masks, occlusion,
colour, light, detail, gaze, lids, the per-track filters, and the paste-back."""
