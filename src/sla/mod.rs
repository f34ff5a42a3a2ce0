//! Service levels: business calendars and (see the pipeline and the daemon's timer) the due
//! times of first response, next response and resolution.

pub mod calendar;
