//! The real camera: V4L2 through nokhwa, by index or device path.
//!
//! nokhwa's V4L backend has no notion of an unplugged device: a vanished camera shows up as an
//! error from `frame()`, which we report as `Unavailable` so the supervisor closes and reopens it
//! with backoff. MJPEG is preferred (YUYV caps the frame rate at high resolutions); some cameras
//! send MJPEG without Huffman tables or with trailing bytes, so decode failures are per-frame
//! `Corrupt` errors, counted and skipped.

use std::path::Path;

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use serde::{Deserialize, Serialize};

use super::{CaptureError, FrameSource, RawFrame};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    #[default]
    Mjpeg,
    Yuyv,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// `/dev/video0`, a `/dev/v4l/by-id/...` link, or an index such as `"0"`.
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default)]
    pub format: PixelFormat,
}

fn default_device() -> String {
    "/dev/video0".into()
}
fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    30
}

/// V4L2 device index of `device`: a number, or a path (links followed) ending in `videoN`.
pub fn device_index(device: &str) -> Result<u32, String> {
    if let Ok(i) = device.parse::<u32>() {
        return Ok(i);
    }
    let path = Path::new(device);
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("{device}: {e} (is the camera plugged in?)"))?;
    real.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("video"))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            format!(
                "{device} resolves to {}, which is not a /dev/videoN device",
                real.display()
            )
        })
}

pub struct CameraSource {
    cfg: CameraConfig,
    camera: Option<Camera>,
}

impl CameraSource {
    pub fn new(cfg: CameraConfig) -> Self {
        Self { cfg, camera: None }
    }

    fn unavailable(&self, message: String) -> CaptureError {
        CaptureError::Unavailable {
            source_name: self.name(),
            message,
        }
    }
}

impl FrameSource for CameraSource {
    fn name(&self) -> String {
        format!("camera {}", self.cfg.device)
    }

    fn open(&mut self) -> Result<(), CaptureError> {
        self.close();
        let index = device_index(&self.cfg.device).map_err(|m| self.unavailable(m))?;
        let format = match self.cfg.format {
            PixelFormat::Mjpeg => FrameFormat::MJPEG,
            PixelFormat::Yuyv => FrameFormat::YUYV,
        };
        let wanted = CameraFormat::new(
            Resolution::new(self.cfg.width, self.cfg.height),
            format,
            self.cfg.fps,
        );
        let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
        let mut camera = Camera::new(CameraIndex::Index(index), request)
            .map_err(|e| self.unavailable(e.to_string()))?;
        camera
            .open_stream()
            .map_err(|e| self.unavailable(e.to_string()))?;
        tracing::info!(device = %self.cfg.device, format = ?camera.camera_format(), "camera streaming");
        self.camera = Some(camera);
        Ok(())
    }

    fn next_frame(&mut self) -> Result<RawFrame, CaptureError> {
        let name = self.name();
        let Some(camera) = self.camera.as_mut() else {
            return Err(self.unavailable("not open".into()));
        };
        let buffer = camera.frame().map_err(|e| CaptureError::Unavailable {
            source_name: name.clone(),
            message: e.to_string(),
        })?;
        let acquired = std::time::Instant::now();
        // The decoders fill a cut-off MJPEG frame with grey and call it a success.
        if let Err(message) = super::decode::check_complete(buffer.buffer()) {
            return Err(CaptureError::Corrupt {
                source_name: name,
                message,
            });
        }
        let image = match buffer.decode_image::<RgbFormat>() {
            Ok(img) => img,
            // Some cameras' MJPEG lacks Huffman tables, which the general decoder tolerates.
            Err(first) => {
                super::replay::decode_frame(buffer.buffer()).map_err(|_| CaptureError::Corrupt {
                    source_name: name,
                    message: first.to_string(),
                })?
            }
        };
        Ok(RawFrame {
            image,
            acquired,
            decode: acquired.elapsed(),
        })
    }

    fn close(&mut self) {
        if let Some(mut c) = self.camera.take() {
            let _ = c.stop_stream();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_indices_from_numbers_and_paths() {
        assert_eq!(device_index("2"), Ok(2));
        let err = device_index("/dev/video-that-does-not-exist").expect_err("no such device");
        assert!(err.contains("plugged in"), "{err}");
        // Opening a camera on this machine (no V4L2) fails cleanly, never panics.
        let mut cam = CameraSource::new(CameraConfig {
            device: "0".into(),
            width: 640,
            height: 480,
            fps: 30,
            format: PixelFormat::Mjpeg,
        });
        assert!(matches!(cam.open(), Err(CaptureError::Unavailable { .. })));
        assert!(matches!(
            cam.next_frame(),
            Err(CaptureError::Unavailable { .. })
        ));
    }
}
