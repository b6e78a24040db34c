//! Naming forecasters: `NAME` or `NAME+cal` (the calibrated quantile layer on top).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    Adaptive, Calibrated, Ets, ForecastError, Forecaster, GlobalGbm, GlobalLinear, LastValue,
    LastValueQuantiles, Mstl, Oracle, SeasonalNaive, TrainSet, WindowMax,
};

/// The forecasting models, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseModel {
    #[default]
    LastValue,
    WindowMax,
    SeasonalNaive,
    SeasonalNaiveWeekly,
    LastValueQuantiles,
    LastValueSeasonal,
    Adaptive,
    Ets,
    Mstl,
    GlobalLinear,
    GlobalGbm,
    Ensemble,
    Oracle,
}

impl BaseModel {
    pub const ALL: [BaseModel; 13] = [
        BaseModel::LastValue,
        BaseModel::WindowMax,
        BaseModel::SeasonalNaive,
        BaseModel::SeasonalNaiveWeekly,
        BaseModel::LastValueQuantiles,
        BaseModel::LastValueSeasonal,
        BaseModel::Adaptive,
        BaseModel::Ets,
        BaseModel::Mstl,
        BaseModel::GlobalLinear,
        BaseModel::GlobalGbm,
        BaseModel::Ensemble,
        BaseModel::Oracle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BaseModel::LastValue => "last-value",
            BaseModel::WindowMax => "window-max",
            BaseModel::SeasonalNaive => "seasonal-naive",
            BaseModel::SeasonalNaiveWeekly => "seasonal-naive-weekly",
            BaseModel::LastValueQuantiles => "last-value-quantiles",
            BaseModel::LastValueSeasonal => "last-value-seasonal",
            BaseModel::Adaptive => "adaptive",
            BaseModel::Ets => "ets",
            BaseModel::Mstl => "mstl",
            BaseModel::GlobalLinear => "global-linear",
            BaseModel::GlobalGbm => "global-gbm",
            BaseModel::Ensemble => "ensemble",
            BaseModel::Oracle => "oracle",
        }
    }
}

/// A forecaster by name: a model, optionally with the calibrated quantile layer
/// (`NAME+cal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForecasterSpec {
    pub base: BaseModel,
    pub calibrated: bool,
}

impl ForecasterSpec {
    pub const fn of(base: BaseModel) -> Self {
        Self {
            base,
            calibrated: false,
        }
    }

    pub const fn calibrated(base: BaseModel) -> Self {
        Self {
            base,
            calibrated: true,
        }
    }

    pub fn is_oracle(&self) -> bool {
        self.base == BaseModel::Oracle
    }

    /// Make the forecaster, not yet fitted. `day_minutes` is the length of a day of the
    /// histories it will be shown; the oracle needs `truth` (aligned with them).
    pub fn make(&self, day_minutes: usize, truth: &[Vec<f64>]) -> Box<dyn Forecaster> {
        let base: Box<dyn Forecaster> = match self.base {
            BaseModel::LastValue => Box::new(LastValue),
            BaseModel::WindowMax => Box::new(WindowMax { window: 5 }),
            BaseModel::SeasonalNaive => Box::new(SeasonalNaive::new(1, day_minutes)),
            BaseModel::SeasonalNaiveWeekly => Box::new(SeasonalNaive::new(7, day_minutes)),
            BaseModel::LastValueQuantiles => Box::new(LastValueQuantiles::new(120)),
            BaseModel::LastValueSeasonal => Box::new(LastValueQuantiles::seasonal(
                120,
                vec![2, 3, 4, 5, 6, 10, 15, 30],
            )),
            BaseModel::Adaptive => Box::new(Adaptive::new(day_minutes)),
            BaseModel::Ets => Box::new(Ets::default()),
            BaseModel::Mstl => Box::new(Mstl::default()),
            BaseModel::GlobalLinear => Box::new(GlobalLinear::default()),
            BaseModel::GlobalGbm => Box::new(GlobalGbm::default()),
            BaseModel::Ensemble => Box::new(crate::global::Mean::new(
                "ensemble",
                vec![Box::new(GlobalGbm::default()), Box::new(Mstl::default())],
            )),
            BaseModel::Oracle => Box::new(Oracle::new(truth.to_vec())),
        };
        if self.calibrated {
            Box::new(Calibrated::new(base))
        } else {
            base
        }
    }

    /// Make the forecaster for a run and fit it on the days before the run. A model
    /// fitted for the same data before (the data's fit cache is shared by its clones)
    /// is copied, not fitted again: fitting is deterministic.
    pub fn build(&self, data: &ForecastData) -> Result<Box<dyn Forecaster>, ForecastError> {
        let key = self.to_string();
        // Held while fitting, so that runs started together fit a model once.
        let mut cache = data.fitted.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(&key) {
            return Ok(f.clone());
        }
        let f = self.build_uncached(data)?;
        cache.insert(key, f.clone());
        Ok(f)
    }

    fn build_uncached(&self, data: &ForecastData) -> Result<Box<dyn Forecaster>, ForecastError> {
        let truth: Vec<Vec<f64>> = (0..data.truth_rpm.len().max(data.past_rpm.len()))
            .map(|j| {
                let mut t = data.past_rpm.get(j).cloned().unwrap_or_default();
                t.extend(data.truth_rpm.get(j).into_iter().flatten());
                t
            })
            .collect();
        let mut f = self.make(data.day_minutes(), &truth);
        if let Some(train) = data.train_set()? {
            f.fit(&train)?;
        }
        Ok(f)
    }
}

impl fmt::Display for ForecasterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.name())?;
        if self.calibrated {
            f.write_str("+cal")?;
        }
        Ok(())
    }
}

impl FromStr for ForecasterSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, calibrated) = match s.strip_suffix("+cal") {
            Some(n) => (n, true),
            None => (s, false),
        };
        let base = BaseModel::ALL
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = BaseModel::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown forecaster `{s}` (known: {}; add +cal for the calibrated quantile layer)",
                    names.join(", ")
                )
            })?;
        Ok(Self {
            base: *base,
            calibrated,
        })
    }
}

impl Serialize for ForecasterSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ForecasterSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What forecasters may know of a run beyond the history they are shown.
#[derive(Debug, Clone, Default)]
pub struct ForecastData {
    /// Every job's requests per minute for the whole run (the oracle's input only).
    pub truth_rpm: Vec<Vec<f64>>,
    /// Every job's requests per minute before the run, from minute 0 of a day up to
    /// the run's first minute: the histories forecasters are shown are this followed
    /// by the run's minutes so far. Empty when nothing is known.
    pub past_rpm: Vec<Vec<f64>>,
    /// Minutes in a day of the trace (1440 when absent).
    pub day_minutes: Option<usize>,
    /// Forecasters already fitted on this data, by name (shared by clones; the data
    /// must not change once a forecaster is built from it).
    pub fitted: FitCache,
}

/// See [`ForecastData::fitted`].
#[derive(Clone, Default)]
pub struct FitCache(Arc<Mutex<HashMap<String, Box<dyn Forecaster>>>>);

impl fmt::Debug for FitCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FitCache")
    }
}

impl ForecastData {
    /// Data on which forecaster `spec` is already fitted (fitted elsewhere, e.g. in a
    /// server's background): building `spec` on it copies `model`. Nothing is known of
    /// the past here: the histories forecasters are shown carry it.
    pub fn prefitted(spec: ForecasterSpec, model: Box<dyn Forecaster>, day_minutes: usize) -> Self {
        let data = Self {
            day_minutes: Some(day_minutes),
            ..Self::default()
        };
        data.fitted
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.to_string(), model);
        data
    }

    pub fn day_minutes(&self) -> usize {
        self.day_minutes.unwrap_or(1440).max(1)
    }

    /// The whole days of the past, to fit on (None without a whole day for every job).
    pub fn train_set(&self) -> Result<Option<TrainSet>, ForecastError> {
        let day = self.day_minutes();
        if self.past_rpm.is_empty() || self.past_rpm.iter().any(|p| p.len() < day) {
            return Ok(None);
        }
        let jobs = self
            .past_rpm
            .iter()
            .map(|p| p[..p.len() / day * day].to_vec())
            .collect();
        TrainSet::new(day, jobs).map(Some)
    }
}
